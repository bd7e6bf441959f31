package resolve

import (
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
)

// ttlLRU is a bounded LRU whose entries expire. Safe for concurrent use.
type ttlLRU[V comparable] struct {
	mu  sync.Mutex
	lru *simplelru.LRU[string, ttlEntry[V]]
	// now is real time, not Options.Now: tokens expire in real time. Tests replace it.
	now func() time.Time
}

type ttlEntry[V comparable] struct {
	v       V
	expires time.Time
}

func newTTLLRU[V comparable](size int) *ttlLRU[V] {
	l, err := simplelru.NewLRU[string, ttlEntry[V]](size, nil)
	if err != nil {
		panic(err) // only for a size below 1
	}
	return &ttlLRU[V]{lru: l, now: time.Now}
}

func (c *ttlLRU[V]) get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.lru.Get(key)
	if ok && c.now().Before(e.expires) {
		return e.v, true
	}
	if ok {
		c.lru.Remove(key)
	}
	var zero V
	return zero, false
}

func (c *ttlLRU[V]) put(key string, v V, ttl time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Add(key, ttlEntry[V]{v: v, expires: c.now().Add(ttl)})
}

// drop removes v under key, and only v: a concurrent call may already have replaced it.
func (c *ttlLRU[V]) drop(key string, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.lru.Peek(key); ok && e.v == v {
		c.lru.Remove(key)
	}
}

func (c *ttlLRU[V]) remove(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lru.Remove(key)
}

func (c *ttlLRU[V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}
