package resolve_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/resolve"
)

// failoverBed is two mirrors of one upstream, each holding its own image under hub/app (so the
// digest tells which answered), and the upstream.
type failoverBed struct {
	m1, m2, up        *testRegistry
	d1, d2, dUp       string
	clock             *clock
	r                 *resolve.Resolver
	ref1, ref2, upRef name.Tag
}

func newFailoverBed(t *testing.T, opts resolve.Options, tag string, push1, push2 bool) *failoverBed {
	t.Helper()
	b := &failoverBed{m1: newRegistry(t), m2: newRegistry(t), up: newRegistry(t), clock: newClock()}
	if push1 {
		b.d1 = b.m1.push(t, "hub/app:"+tag)
	}
	if push2 {
		b.d2 = b.m2.push(t, "hub/app:"+tag)
	}
	b.dUp = b.up.push(t, "app:"+tag)
	b.ref1, b.ref2, b.upRef = b.m1.ref(t, "hub/app:"+tag), b.m2.ref(t, "hub/app:"+tag), b.up.ref(t, "app:"+tag)
	opts.Registries = map[string]resolve.Registry{b.m2.host: {Insecure: true, PreservesDigests: true, Auth: opts.Registries["m2"].Auth}}
	b.r = newResolver(t, b.clock, opts, b.m1, b.m2, b.up)
	return b
}

func (b *failoverBed) request() contract.ResolveRequest {
	return contract.ResolveRequest{Ref: b.ref1, Alternates: []name.Tag{b.ref2}, Upstream: b.upRef}
}

func TestFailover(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		opts       resolve.Options
		push1      bool
		fault1     func(*testRegistry) func(http.ResponseWriter, *http.Request) bool
		fault2     func(*testRegistry) func(http.ResponseWriter, *http.Request) bool
		budget     time.Duration
		served     int
		digest     func(*failoverBed) string
		skipped    error // the class of Skipped[0]
		err        error // none served
		noUpstream bool  // the upstream got no manifest request
	}{
		{name: "first serves", push1: true, served: 0, digest: func(b *failoverBed) string { return b.d1 }, noUpstream: true},
		{name: "first down", push1: true, fault1: fixed(status(http.StatusServiceUnavailable)), served: 1,
			digest: func(b *failoverBed) string { return b.d2 }, skipped: resolve.ErrRegistry, noUpstream: true},
		{name: "first lacks the tag", served: 1, digest: func(b *failoverBed) string { return b.d2 }, skipped: resolve.ErrNotFound, noUpstream: true},
		{name: "first hangs past its share", push1: true, fault1: func(tr *testRegistry) func(http.ResponseWriter, *http.Request) bool { return tr.hang },
			budget: 2 * time.Second, served: 1, digest: func(b *failoverBed) string { return b.d2 }, skipped: resolve.ErrTimeout, noUpstream: true},
		{name: "second with its own credentials", push1: true, fault1: fixed(status(http.StatusServiceUnavailable)),
			fault2: fixed(requireBasic("robot2", "secret2")),
			opts:   resolve.Options{Registries: map[string]resolve.Registry{"m2": {Auth: basicAuth("robot2", "secret2")}}},
			served: 1, digest: func(b *failoverBed) string { return b.d2 }, skipped: resolve.ErrRegistry},
		{name: "none serves", push1: true, fault1: fixed(status(http.StatusServiceUnavailable)), fault2: fixed(status(http.StatusBadGateway)), err: resolve.ErrRegistry},
		{name: "upstream after every mirror", push1: true, opts: resolve.Options{FallbackToUpstream: true},
			fault1: fixed(status(http.StatusServiceUnavailable)), fault2: fixed(status(http.StatusBadGateway)),
			served: 1, digest: func(b *failoverBed) string { return b.dUp }, skipped: resolve.ErrRegistry},
		{name: "upstream not asked while a mirror serves", push1: true, opts: resolve.Options{FallbackToUpstream: true},
			fault1: fixed(status(http.StatusServiceUnavailable)), served: 1, digest: func(b *failoverBed) string { return b.d2 }, skipped: resolve.ErrRegistry, noUpstream: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newFailoverBed(t, tc.opts, "v1", tc.push1, true)
			if tc.fault1 != nil {
				b.m1.setFault(tc.fault1(b.m1))
			}
			if tc.fault2 != nil {
				b.m2.setFault(tc.fault2(b.m2))
			}
			budget := tc.budget
			if budget == 0 {
				budget = 10 * time.Second // generous: nothing here waits for it
			}
			ctx, cancel := context.WithTimeout(context.Background(), budget)
			defer cancel()
			res, err := b.r.Resolve(ctx, b.request())
			if tc.err != nil {
				if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), b.m1.host) || !strings.Contains(err.Error(), b.m2.host) {
					t.Fatalf("err %v, want %v naming both mirrors", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Served() != tc.served || res.Digest != tc.digest(b) || res.Stale {
				t.Errorf("served %d %s (stale %v), want %d %s", res.Served(), res.Digest, res.Stale, tc.served, tc.digest(b))
			}
			if len(skipped(res)) != tc.served || (tc.skipped != nil && !errors.Is(skipped(res)[0], tc.skipped)) {
				t.Errorf("skipped %v, want %d of class %v", skipped(res), tc.served, tc.skipped)
			}
			if n := b.up.manifestRequests(); tc.noUpstream && n != 0 {
				t.Errorf("the upstream got %d manifest requests", n)
			}
		})
	}
}

func fixed(f func(http.ResponseWriter, *http.Request) bool) func(*testRegistry) func(http.ResponseWriter, *http.Request) bool {
	return func(*testRegistry) func(http.ResponseWriter, *http.Request) bool { return f }
}

// A first mirror whose circuit is open is passed over without a call, from the cache too; once
// the cooldown has passed, its probe is made and, answered, its answers come first again.
func TestFailoverCircuitAndRecovery(t *testing.T) {
	t.Parallel()
	b := newFailoverBed(t, resolve.Options{CacheTTL: time.Hour, BreakerFailures: 1, BreakerCooldown: 30 * time.Second}, "v1", true, true)
	ctx := context.Background()
	req := b.request()
	if res, err := b.r.Resolve(ctx, req); err != nil || res.Served() != 0 {
		t.Fatalf("both up: %+v %v", res, err)
	}

	// m1 fails for another tag, which opens its circuit; v1, cached on m1, now goes to m2.
	b.m1.push(t, "hub/app:v2")
	b.m2.push(t, "hub/app:v2")
	b.m1.setFault(status(http.StatusServiceUnavailable))
	v2 := contract.ResolveRequest{Ref: b.m1.ref(t, "hub/app:v2"), Alternates: []name.Tag{b.m2.ref(t, "hub/app:v2")}}
	if res, err := b.r.Resolve(ctx, v2); err != nil || res.Served() != 1 {
		t.Fatalf("m1 down: %+v %v", res, err)
	}
	if o, ok := b.r.Cached(req); ok {
		t.Fatalf("m1's circuit is open and m2 has no answer cached, yet Cached answered %+v", o)
	}
	before := b.m1.manifestRequests()
	res, err := b.r.Resolve(ctx, req)
	if err != nil || res.Served() != 1 || res.Digest != b.d2 || len(skipped(res)) != 1 || !errors.Is(skipped(res)[0], resolve.ErrCircuitOpen) {
		t.Fatalf("m1's circuit open: %+v %v", res, err)
	}
	if n := b.m1.manifestRequests() - before; n != 0 {
		t.Errorf("m1 got %d manifest requests while its circuit was open", n)
	}
	if o, ok := b.r.Cached(req); !ok || o.Served() != 1 || o.Digest != b.d2 || len(skipped(o.Resolution)) != 1 {
		t.Errorf("Cached with m1's circuit open: %+v %v, want m2's digest", o, ok)
	}
	if s, ok := b.r.Stale(req); ok && s.Served() != 1 {
		t.Errorf("Stale prefers the open circuit's candidate: %+v", s)
	}

	// m1 recovers; within the cooldown nothing changes, after it the probe goes to m1.
	b.m1.setFault(nil)
	if o, ok := b.r.Cached(req); !ok || o.Served() != 1 {
		t.Errorf("within the cooldown: %+v %v", o, ok)
	}
	b.clock.Advance(31 * time.Second)
	if o, ok := b.r.Cached(req); !ok || o.Served() != 0 {
		// m1's own entry is still fresh: once its probe is due, it answers again.
		t.Errorf("after the cooldown: %+v %v, want m1's cached digest", o, ok)
	}
	if res, err := b.r.Resolve(ctx, v2); err != nil || res.Served() != 0 {
		t.Errorf("v2 after m1 recovered: %+v %v", res, err)
	}
}

// With every mirror failing, the last digest one of them served stands in (stale-if-error), and
// the request says which mirror it is for.
func TestFailoverStale(t *testing.T) {
	t.Parallel()
	b := newFailoverBed(t, resolve.Options{CacheTTL: time.Minute, MaxStale: time.Hour}, "v1", true, true)
	ctx := context.Background()
	if res, err := b.r.Resolve(ctx, b.request()); err != nil || res.Served() != 0 {
		t.Fatalf("both up: %+v %v", res, err)
	}
	b.clock.Advance(2 * time.Minute)
	b.m1.setFault(status(http.StatusServiceUnavailable))
	b.m2.setFault(status(http.StatusServiceUnavailable))
	res, err := b.r.Resolve(ctx, b.request())
	if err != nil || !res.Stale || res.Served() != 0 || res.Digest != b.d1 {
		t.Errorf("every mirror down: %+v %v, want m1's last digest, stale", res, err)
	}
	if s, ok := b.r.Stale(b.request()); !ok || s.Served() != 0 || s.Digest != b.d1 {
		t.Errorf("Stale: %+v %v", s, ok)
	}
}

// skipped is a resolution's Failover.Skipped, nil without a failover.
func skipped(r contract.Resolution) []error {
	if r.Failover == nil {
		return nil
	}
	return r.Failover.Skipped
}

// A request with alternates has its digest compared with the upstream's too, not only the last
// candidate (the only one that may fall back to the upstream): the first mirror converts, and
// the next admission says so.
func TestFailoverComparesEveryCandidate(t *testing.T) {
	t.Parallel()
	mirror, upstream, req, want := convertedMirror(t)
	second := newRegistry(t)
	req.Alternates = []name.Tag{second.ref(t, "app:v1")}
	r := newResolver(t, newClock(), resolve.Options{DigestMismatch: resolve.PinMirror}, mirror, second, upstream)
	first, err := r.Resolve(context.Background(), req)
	if err != nil || first.Served() != 0 {
		t.Fatalf("first resolution: %+v, %v; want the first mirror's digest", first, err)
	}
	waitCompared(t, r, req, first.Digest)
	o, ok := r.Cached(req)
	if !ok || o.Mismatch == nil || o.Mismatch.Cause != contract.CauseConversion || o.Mismatch.UpstreamDigest != want {
		t.Fatalf("next admission: %+v; want a conversion mismatch against the upstream's %s", o, want)
	}
}
