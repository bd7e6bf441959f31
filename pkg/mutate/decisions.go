package mutate

import (
	"sync"
	"sync/atomic"

	"github.com/pullgate/pullgate/pkg/policy"
)

// maxDecisions bounds the memo: real clusters run a few hundred distinct images at a time, and
// a pod author cycling through endless new tags only costs the memo its contents, never memory.
const maxDecisions = 1024

// policyDecisions remembers the decisions of one policy by image text. A reloaded policy gets
// new ones (decisionMemo.For), so nothing decided under the old one is ever reused.
type policyDecisions struct {
	pol *policy.Compiled
	mu  sync.RWMutex
	m   map[string]decision
}

// decide returns the policy's decision for image, remembered when it can be. A nil d
// decides every time.
func (d *policyDecisions) decide(pol *policy.Compiled, image string) decision {
	if d == nil || d.pol != pol {
		return decideImage(pol, image)
	}
	d.mu.RLock()
	dec, ok := d.m[image]
	d.mu.RUnlock()
	if ok {
		return dec
	}
	dec = decideImage(pol, image)
	d.mu.Lock()
	if len(d.m) >= maxDecisions {
		clear(d.m) // start afresh: cheaper than keeping an order, and bounded all the same
	}
	d.m[image] = dec
	d.mu.Unlock()
	return dec
}

// decisionMemo holds the decisions of the policy the handler last saw.
type decisionMemo struct {
	current atomic.Pointer[policyDecisions]
}

// For returns the decisions of pol, new ones when the policy has changed; nil (decide every
// time) for a nil memo.
func (m *decisionMemo) For(pol *policy.Compiled) *policyDecisions {
	if m == nil {
		return nil
	}
	if d := m.current.Load(); d != nil && d.pol == pol {
		return d
	}
	d := &policyDecisions{pol: pol, m: make(map[string]decision)}
	m.current.Store(d)
	return d
}
