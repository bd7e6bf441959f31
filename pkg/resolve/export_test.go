package resolve

import "time"

// SetSessionClock replaces the real-time clock that expires r's registry sessions, for tests
// that cannot wait minutes. Call it before r is used.
func SetSessionClock(r *Resolver, now func() time.Time) {
	r.sessions.rts.now = now
	r.sessions.challenges.now = now
}
