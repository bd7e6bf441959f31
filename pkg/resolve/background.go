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

func (s *slots) give(host string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m[host]--; s.m[host] <= 0 {
		delete(s.m, host)
	}
}
