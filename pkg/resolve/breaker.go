package resolve

import (
	"sync"
	"sync/atomic"
	"time"
)

// breakerCap bounds how many registries keep breaker state. Hosts come from pod specs, so a
// pod author could otherwise grow the map; past the cap, healthy entries are dropped.
const breakerCap = 1024

// breakers holds one circuit breaker per registry host. They outlive Configure: a reload
// does not make a failing registry healthy.
type breakers struct {
	mu sync.Mutex
	m  map[string]*breaker
	// notClosed counts the breakers that are open or half-open, so that a request with
	// alternates learns that every circuit is closed without a lock.
	notClosed atomic.Int64
}

// refusing reports whether key's breaker, if there is one, refuses calls now, and until when.
func (b *breakers) refusing(key string, now time.Time) (time.Time, bool) {
	b.mu.Lock()
	br, ok := b.m[key]
	b.mu.Unlock()
	if !ok {
		return time.Time{}, false
	}
	return br.refusing(now)
}

func (b *breakers) get(host, label string) *breaker {
	b.mu.Lock()
	defer b.mu.Unlock()
	if br, ok := b.m[host]; ok {
		return br
	}
	if b.m == nil {
		b.m = make(map[string]*breaker)
	}
	if len(b.m) >= breakerCap {
		for h, br := range b.m {
			if br.idle() {
				delete(b.m, h)
			}
		}
	}
	br := &breaker{label: label}
	b.m[host] = br
	return br
}

type breakerState int

const (
	closed breakerState = iota
	open
	halfOpen
)

// breaker is a consecutive-failure circuit breaker. Open, it refuses calls until the cooldown
// has passed; then it lets exactly one probe through (half-open), and the probe's outcome
// closes or reopens it. Every allow that returns true must be followed by one done.
type breaker struct {
	label string // metric label, fixed at creation so the gauge's inc and dec match

	mu       sync.Mutex
	state    breakerState
	failures int
	until    time.Time // open: when the next probe may go
}

// allow reports whether a call may go to the registry now, and if not, when it may.
func (b *breaker) allow(now time.Time) (bool, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case open:
		if now.Before(b.until) {
			return false, b.until
		}
		b.state = halfOpen
		return true, time.Time{}
	case halfOpen:
		// The probe is out; everyone else still fails fast.
		return false, b.until
	default:
		return true, time.Time{}
	}
}

// done records the outcome of an allowed call. It returns +1 when the breaker opened, -1 when
// it closed, 0 otherwise, for the gauge.
func (b *breaker) done(now time.Time, failed bool, threshold int, cooldown time.Duration) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !failed {
		b.failures = 0
		if b.state != closed {
			b.state = closed
			return -1
		}
		return 0
	}
	b.failures++
	switch {
	case b.state == halfOpen:
		b.state = open
		b.until = now.Add(cooldown)
	case b.state == closed && b.failures >= threshold:
		b.state = open
		b.until = now.Add(cooldown)
		return 1
	}
	return 0
}

// release ends an allowed call that never reached the registry (its address was refused), and
// so tells nothing of its health: the failure count stays, and a probe that was let through
// leaves the breaker open with the cooldown over, so that the next call probes instead.
func (b *breaker) release() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == halfOpen {
		b.state = open
	}
}

// refusing is allow without its side effect: whether a call would fail fast now.
func (b *breaker) refusing(now time.Time) (time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case open:
		return b.until, now.Before(b.until)
	case halfOpen:
		return b.until, true
	}
	return time.Time{}, false
}

func (b *breaker) idle() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state == closed && b.failures == 0
}
