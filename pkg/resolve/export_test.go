package resolve

import (
	"crypto/x509"
	"net/netip"
	"time"

	"github.com/pullgate/pullgate/pkg/contract"
)

// SetSessionClock replaces the real-time clock that expires r's registry sessions, for tests
// that cannot wait minutes. Call it before r is used.
func SetSessionClock(r *Resolver, now func() time.Time) {
	r.sessions.rts.now = now
	r.sessions.challenges.now = now
}

// NewForTest is New with check in place of the classification of the addresses that guarded
// connections may reach (it returns "" to allow one, or why not), so that a loopback test
// server can play a public one; and with roots, when not nil, in place of the system's, so that
// a test registry can be trusted without being listed with a CA bundle.
func NewForTest(opts Options, check func(netip.AddrPort) string, roots *x509.CertPool) (*Resolver, error) {
	if check == nil {
		check = publicOnly
	}
	return newResolver(opts, check, roots)
}

// AddressClass is why ip is not a public unicast address, or "" when it is one.
func AddressClass(ip netip.Addr) string { return addressClass(ip) }

// Compared reports whether the comparison of the mirror's digest for req with the upstream's has
// ended (and was remembered), for tests that wait on it.
func Compared(r *Resolver, req contract.ResolveRequest, digest string) bool {
	r.fidelity.mu.Lock()
	defer r.fidelity.mu.Unlock()
	c, ok := r.fidelity.seen.Peek(cacheKey(r.cfg.Load(), req.Ref, "") + "\x00" + digest)
	return ok && c != nil
}

// Comparing counts the comparisons with upstreams under way.
func Comparing(r *Resolver) int {
	s := &r.fidelity.slots
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.m {
		n += c
	}
	return n
}
