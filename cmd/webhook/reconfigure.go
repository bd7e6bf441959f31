package main

import (
	"context"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/resolve"
)

// reconfigurer is the one way the resolver's settings change: after a policy reload, and on the
// credential refresh tick. It holds its lock from reading the policy in force to applying it,
// so a tick that read the old policy cannot apply it after a reload has applied the new one.
type reconfigurer struct {
	policy   mutate.PolicySource
	secrets  *secrets
	resolver interface{ Configure(resolve.Options) error }
	log      logr.Logger

	mu sync.Mutex
}

// apply configures the resolver from the policy in force.
func (r *reconfigurer) apply(ctx context.Context) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pol := r.policy.Current()
	if pol == nil {
		return
	}
	opts, err := resolverOptions(ctx, pol, r.secrets)
	if err != nil {
		// Partial settings still apply: one unreadable secret must not stop every other mirror.
		r.log.Error(err, "Resolver settings incomplete")
	}
	if err := r.resolver.Configure(opts); err != nil {
		r.log.Error(err, "Resolver settings rejected; keeping the previous ones")
	}
}

// refresh re-applies the policy every interval until ctx ends, so rotated credential Secrets
// take effect without a policy change.
func (r *reconfigurer) refresh(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.apply(ctx)
		}
	}
}
