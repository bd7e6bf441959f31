package resolve

import (
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// entry is one cached answer. Expiry is computed when it is read, from the TTLs in force then,
// so a policy reload that changes them applies to what is already cached.
type entry struct {
	digest string // empty for a negative (not found) entry
	stored time.Time
	// differs is what comparing digest with the upstream's found, when they differ (fidelity.go).
	differs *verdict
}

// cache is a bounded LRU keyed by normalized reference + credential identity. golang-lru's
// Cache is safe for concurrent use.
type cache struct {
	lru *lru.Cache[string, entry]
}

func newCache(size int) (*cache, error) {
	l, err := lru.New[string, entry](size)
	if err != nil {
		return nil, err
	}
	return &cache{lru: l}, nil
}

func (c *cache) put(key string, e entry) { c.lru.Add(key, e) }

// lookupResult is what the cache can say about a key right now.
type lookupResult int

const (
	lookupMiss     lookupResult = iota
	lookupHit                   // fresh digest
	lookupNegative              // fresh "not found"
)

func (c *cache) lookup(key string, now time.Time, cfg *config) (lookupResult, entry) {
	e, ok := c.lru.Get(key)
	if !ok {
		return lookupMiss, entry{}
	}
	if e.digest == "" {
		if now.Before(e.stored.Add(cfg.negativeTTL)) {
			return lookupNegative, entry{}
		}
		return lookupMiss, entry{}
	}
	if now.Before(e.stored.Add(cfg.cacheTTL)) {
		return lookupHit, e
	}
	return lookupMiss, entry{}
}

// stale returns an expired digest that is still within the stale-if-error window.
func (c *cache) stale(key string, now time.Time, cfg *config) (entry, bool) {
	e, ok := c.lru.Peek(key)
	if !ok || e.digest == "" {
		return entry{}, false
	}
	if cfg.maxStale > 0 && now.Before(e.stored.Add(cfg.cacheTTL+cfg.maxStale)) {
		return e, true
	}
	return entry{}, false
}
