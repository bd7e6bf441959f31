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

// busy reports whether host has a lookup running past the admission budget.
func (s *slots) busy(host string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[host] > 0
}

// inBackground marks the context of a lookup that took a slot. While one runs on a mirror (a
// big copy: Zot serializes syncs under its default reqConcurrent), other lookups there may time
// out only because they queue behind it; their timeouts count for their repository alone, not
// for the mirror's breaker. Its own timeout still counts, so a mirror that hangs for everything
// is left alone in the end, once its background lookups time out.
type inBackground struct{}

func (s *slots) give(host string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[host]--; s.m[host] <= 0 {
		delete(s.m, host)
	}
}
