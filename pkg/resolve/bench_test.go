package resolve_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pullgate/pullgate/pkg/resolve"
)

// go test -run '^$' -bench . -benchmem ./pkg/resolve/
func BenchmarkResolve(b *testing.B) {
	reg := newRegistry(b)
	reg.push(b, "app:v1")
	ctx := context.Background()

	b.Run("hit", func(b *testing.B) {
		r := newResolver(b, newClock(), resolve.Options{}, reg)
		req := request(reg.ref(b, "app:v1"))
		if _, err := r.Resolve(ctx, req); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := r.Resolve(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})

	// What a warm admission asks: Cached, with and without a second mirror to fail over to
	// (never asked while the first serves).
	for _, alternates := range []int{0, 1} {
		b.Run(fmt.Sprintf("cached-alternates-%d", alternates), func(b *testing.B) {
			r := newResolver(b, newClock(), resolve.Options{}, reg)
			req := request(reg.ref(b, "app:v1"))
			for range alternates {
				req.Alternates = append(req.Alternates, reg.ref(b, "other:v1"))
			}
			if _, err := r.Resolve(ctx, req); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if o, ok := r.Cached(req); !ok || o.Err != nil || o.Failover != nil {
					b.Fatal(o, ok)
				}
			}
		})
	}

	// Every iteration finds its entry expired and asks the local registry (ping + HEAD).
	b.Run("miss", func(b *testing.B) {
		c := newClock()
		r := newResolver(b, c, resolve.Options{CacheTTL: time.Minute}, reg)
		req := request(reg.ref(b, "app:v1"))
		for b.Loop() {
			c.Advance(2 * time.Minute)
			if _, err := r.Resolve(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})

	// 200 callers at once on an expired entry: one registry call between them.
	b.Run("singleflight-200", func(b *testing.B) {
		c := newClock()
		r := newResolver(b, c, resolve.Options{CacheTTL: time.Minute}, reg)
		req := request(reg.ref(b, "app:v1"))
		before := reg.manifestRequests()
		n := 0
		for b.Loop() {
			c.Advance(2 * time.Minute)
			var wg sync.WaitGroup
			for range 200 {
				wg.Go(func() {
					if _, err := r.Resolve(ctx, req); err != nil {
						b.Error(err)
					}
				})
			}
			wg.Wait()
			n++
		}
		b.ReportMetric(float64(reg.manifestRequests()-before)/float64(n), "requests/op")
	})
}
