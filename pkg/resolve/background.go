package resolve

import "sync"

// DefaultBackgroundLookups bounds the lookups per mirror that go on past the admission budget
// when Options.BackgroundLookups is zero.
const DefaultBackgroundLookups = 4

// slots counts the lookups per registry host that run past the admission budget. A host's
// entry goes when its count falls to zero, so the map holds at most the hosts with one under
// way, and only listed hosts take slots.
type slots struct {
	mu sync.Mutex
	m  map[string]int
	// held counts, per host, timeouts that counted for their repository but wait on the host's
	// background lookups to count for the host (see inBackground).
	held map[string]int
}

// take reserves one of limit slots for host, if one is free.
func (s *slots) take(host string, limit int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[host] >= limit {
		return false
	}
	if s.m == nil {
		s.m = make(map[string]int)
	}
	s.m[host]++
	return true
}

// hold keeps a timeout on host from counting for the host's breaker while a background lookup
// runs there, and reports whether it did.
func (s *slots) hold(host string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[host] == 0 {
		return false
	}
	if s.held == nil {
		s.held = make(map[string]int)
	}
	s.held[host]++
	return true
}

// inBackground marks the context of a lookup that took a slot. While one runs on a mirror (a
// big copy: Zot serializes syncs under its default reqConcurrent), other lookups there may time
// out only because they queue behind it. Their timeouts are held (they count for their
// repository at once): when a background lookup there times out too, the mirror hangs for
// everything, and they count for the host then; when the last one ends otherwise, they were
// queueing, and are dropped.
type inBackground struct{}

// give frees a slot of host, and returns how many held timeouts now count for the host:
// all of them when this lookup timed out.
func (s *slots) give(host string, timedOut bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	if timedOut {
		n = s.held[host]
		delete(s.held, host)
	}
	if s.m[host]--; s.m[host] <= 0 {
		delete(s.m, host)
		delete(s.held, host)
	}
	return n
}
