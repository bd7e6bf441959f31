package resolve

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/pullgate/pullgate/pkg/contract"
)

// failover resolves a request with alternates: its candidates in order, each under its own
// registry's settings and breakers, until one serves the tag. A candidate whose circuit is open
// is passed over without a call; one that fails or lacks the tag is passed over after it
// answers; one that has not answered within its share of the time left is passed over too, its
// call going on to fill the cache. Only the last candidate falls back to the upstream, so the
// upstream is asked after every mirror. When none serves, the first candidate in order whose
// failure allows it answers with its last digest (stale-if-error).
func (r *Resolver) failover(ctx context.Context, cfg *config, req contract.ResolveRequest) (contract.Resolution, string, error) {
	pod, err := r.podCreds(ctx, cfg, req)
	if err != nil {
		return contract.Resolution{}, outcomeUnauthorized, err
	}
	n := 1 + len(req.Alternates)
	var skipped []error
	for i := range n {
		ref, last := req.Candidate(i), i == n-1
		if ctx.Err() != nil {
			break // the budget is spent: what is left is the cache's
		}
		if !last {
			if err := r.refusing(cfg, ref); err != nil {
				skipped = append(skipped, err)
				continue
			}
		}
		key := cacheKey(cfg, ref, pod.id)
		res, outcome, err, ok := r.fromCache(cfg, key, ref)
		if !ok {
			var up *name.Tag
			if up, err = upstreamOf(cfg, req, ref); err != nil {
				return contract.Resolution{}, outcomeError, err
			}
			cctx, cancel := share(ctx, cfg, n-i)
			res, outcome, err = r.ask(cctx, cfg, key, ref, upstream{tag: up, fallback: last && cfg.fallback}, pod, false)
			cancel()
		}
		if err == nil {
			res.Failover = failedOver(i, skipped)
			return res, outcome, nil
		}
		if errors.Is(err, context.Canceled) {
			return contract.Resolution{}, outcomeCanceled, err // the caller gave up
		}
		skipped = append(skipped, err)
	}
	for i := range n {
		if i < len(skipped) && !staleAllowed(skipped[i]) {
			continue
		}
		e, ok := r.cache.stale(cacheKey(cfg, req.Candidate(i), pod.id), cfg.now(), cfg)
		if !ok {
			continue
		}
		if res, aerr := e.answer(true); aerr == nil {
			r.metrics.cache.WithLabelValues("stale").Inc()
			res.Failover = failedOver(i, skipped[:min(i, len(skipped))])
			return res, outcomeStale, nil
		}
	}
	err = noneServed(skipped)
	return contract.Resolution{}, outcomeOf(err), err
}

// cachedFailover is Cached for a request with alternates: the first candidate whose circuit is
// closed answers, or the next one when it has cached "not found". No answer when a candidate
// that would be asked has none cached.
func (r *Resolver) cachedFailover(cfg *config, req contract.ResolveRequest) (contract.Outcome, bool) {
	start := time.Now()
	var skipped []error
	for i := range 1 + len(req.Alternates) {
		ref, last := req.Candidate(i), i == len(req.Alternates)
		if !last {
			if err := r.refusing(cfg, ref); err != nil {
				skipped = append(skipped, err)
				continue
			}
		}
		res, outcome, err, ok := r.fromCache(cfg, cacheKey(cfg, ref, ""), ref)
		if !ok {
			return contract.Outcome{}, false
		}
		if err != nil && !last {
			skipped = append(skipped, err)
			continue
		}
		if err != nil {
			err = noneServed(append(skipped, err))
		} else {
			res.Failover = failedOver(i, skipped)
		}
		r.metrics.duration.WithLabelValues(r.label(ref.Context().RegistryStr()), outcome).Observe(time.Since(start).Seconds())
		return contract.Outcome{Resolution: res, Err: err}, true
	}
	return contract.Outcome{}, false
}

// failedOver is Resolution.Failover for candidate i, nil for Ref.
func failedOver(i int, skipped []error) *contract.Failover {
	if i == 0 {
		return nil
	}
	return &contract.Failover{Served: i, Skipped: skipped}
}

// share is the part of ctx's time left that one of left candidates gets: all of it for the
// last, so that a mirror that hangs leaves the others their turn.
func share(ctx context.Context, cfg *config, left int) (context.Context, context.CancelFunc) {
	if left <= 1 {
		return ctx, func() {}
	}
	budget := cfg.timeout
	if deadline, ok := ctx.Deadline(); ok {
		budget = time.Until(deadline)
	}
	return context.WithTimeout(ctx, budget/time.Duration(left))
}

// staleAllowed: the failures that an expired digest may stand in for, as orStale has them.
func staleAllowed(err error) bool {
	return errors.Is(err, ErrTimeout) || errors.Is(err, ErrRegistry) || errors.Is(err, ErrCircuitOpen)
}

// noneServed is the error of a request no candidate served: every candidate's failure in order,
// the last one's class for errors.Is (one class per error, as Resolve promises).
func noneServed(errs []error) error {
	last := errs[len(errs)-1]
	if len(errs) == 1 {
		return last
	}
	texts := make([]string, len(errs)-1)
	for i, err := range errs[:len(errs)-1] {
		texts[i] = err.Error()
	}
	return fmt.Errorf("%s; %w", strings.Join(texts, "; "), last)
}

// refusing returns why calls to ref's registry or repository fail fast now (its circuit is
// open or a probe is out), nil when they may go. It changes no breaker: the probe that closes a
// circuit is for a call to make, and Cached makes none.
func (r *Resolver) refusing(cfg *config, ref name.Tag) error {
	if r.breakers.notClosed.Load() == 0 {
		return nil // the common case, at the cost of one atomic load
	}
	host, repo := ref.Context().RegistryStr(), ref.Context().RepositoryStr()
	now := cfg.now()
	if until, ok := r.breakers.refusing(host, now); ok {
		return fmt.Errorf("resolve %s: %w: %s is left alone until %s", ref, ErrCircuitOpen, host, until.UTC().Format(time.RFC3339))
	}
	if until, ok := r.breakers.refusing(host+"/"+repo, now); ok {
		return fmt.Errorf("resolve %s: %w: %s timed out on %s repeatedly; that repository is left alone until %s", ref, ErrCircuitOpen, host, repo, until.UTC().Format(time.RFC3339))
	}
	return nil
}

// preferred orders req's candidates for a stale answer: those whose circuits are closed first.
func (r *Resolver) preferred(cfg *config, req contract.ResolveRequest) []int {
	if len(req.Alternates) == 0 {
		return []int{0}
	}
	order := make([]int, 0, 1+len(req.Alternates))
	var later []int
	for i := range 1 + len(req.Alternates) {
		if r.refusing(cfg, req.Candidate(i)) != nil {
			later = append(later, i)
		} else {
			order = append(order, i)
		}
	}
	return append(order, later...)
}
