package report

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pullgate/pullgate/pkg/contract"
)

// Resolve asks r for every request, workers at a time, each under timeout; answers from the
// resolver's cache cost nothing. progress, if set, is called after each answer. A nil r answers
// ErrNotResolved for all (webhook audit --resolve=false).
func Resolve(ctx context.Context, r contract.Resolver, reqs []contract.ResolveRequest, workers int, timeout time.Duration, progress func(done, total int)) map[string]contract.Outcome {
	out := make(map[string]contract.Outcome, len(reqs))
	if r == nil {
		for _, q := range reqs {
			out[key(q)] = contract.Outcome{Err: ErrNotResolved}
		}
		return out
	}
	var rest []contract.ResolveRequest
	if c, ok := r.(contract.CachedResolver); ok {
		for _, q := range reqs {
			if o, ok := c.Cached(q); ok {
				out[key(q)] = o
			} else {
				rest = append(rest, q)
			}
		}
	} else {
		rest = reqs
	}
	var mu sync.Mutex
	done := len(out)
	work := make(chan contract.ResolveRequest)
	var wg sync.WaitGroup
	for range max(1, min(workers, len(rest))) {
		wg.Go(func() {
			for q := range work {
				rctx, cancel := context.WithTimeout(ctx, timeout)
				res, err := r.Resolve(rctx, q)
				cancel()
				if err != nil && errors.Is(err, context.DeadlineExceeded) {
					err = fmt.Errorf("no answer within %s: %w", timeout, err)
				}
				mu.Lock()
				out[key(q)] = contract.Outcome{Resolution: res, Err: err}
				done++
				if progress != nil {
					progress(done, len(reqs))
				}
				mu.Unlock()
			}
		})
	}
	for _, q := range rest {
		if ctx.Err() != nil {
			break
		}
		work <- q
	}
	close(work)
	wg.Wait()
	for _, q := range rest {
		if _, ok := out[key(q)]; !ok {
			out[key(q)] = contract.Outcome{Err: fmt.Errorf("not resolved: %w", ctx.Err())}
		}
	}
	return out
}
