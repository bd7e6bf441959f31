package resolve_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/resolve"
)

// Cached answers what the cache holds, as Resolve would, and nothing else; it never asks the
// registry.
func TestCached(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	want := reg.push(t, "app:v1")
	c := newClock()
	r := newResolver(t, c, resolve.Options{CacheTTL: time.Minute, NegativeTTL: 10 * time.Second}, reg)
	ref, missing := reg.ref(t, "app:v1"), reg.ref(t, "app:missing")

	if o, ok := r.Cached(request(ref)); ok {
		t.Fatalf("empty cache answered %+v", o)
	}
	if _, err := r.Resolve(context.Background(), request(ref)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Resolve(context.Background(), request(missing)); !errors.Is(err, resolve.ErrNotFound) {
		t.Fatalf("missing tag: %v", err)
	}
	before := reg.count(http.MethodHead, "app", "v1") + reg.count(http.MethodHead, "app", "missing")

	if o, ok := r.Cached(request(ref)); !ok || o.Err != nil || o.Digest != want || o.Stale {
		t.Errorf("cached tag: %+v, %v; want %s", o, ok, want)
	}
	if o, ok := r.Cached(request(missing)); !ok || !errors.Is(o.Err, resolve.ErrNotFound) {
		t.Errorf("cached not-found: %+v, %v; want ErrNotFound", o, ok)
	}
	c.Advance(11 * time.Second) // the negative answer expires, the digest does not
	if o, ok := r.Cached(request(missing)); ok {
		t.Errorf("expired not-found answered: %+v", o)
	}
	if _, ok := r.Cached(request(ref)); !ok {
		t.Error("fresh digest not answered")
	}
	c.Advance(time.Minute) // now the digest has expired too: only Resolve may serve it stale
	if o, ok := r.Cached(request(ref)); ok {
		t.Errorf("expired digest answered: %+v", o)
	}
	if n := reg.count(http.MethodHead, "app", "v1") + reg.count(http.MethodHead, "app", "missing"); n != before {
		t.Errorf("Cached sent %d manifest requests", n-before)
	}
}

// Stale answers, without a registry, with an expired digest while MaxStale allows it: what the
// handler serves when the admission budget ends before the registry answered.
func TestStale(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	want := reg.push(t, "app:v1")
	c := newClock()
	r := newResolver(t, c, resolve.Options{CacheTTL: time.Minute, MaxStale: time.Hour}, reg)
	ref := reg.ref(t, "app:v1")
	if res, ok := r.Stale(request(ref)); ok {
		t.Fatalf("empty cache answered %+v", res)
	}
	if _, err := r.Resolve(context.Background(), request(ref)); err != nil {
		t.Fatal(err)
	}
	before := reg.count(http.MethodHead, "app", "v1")
	c.Advance(2 * time.Minute) // expired, within MaxStale
	if res, ok := r.Stale(request(ref)); !ok || res.Digest != want || !res.Stale {
		t.Errorf("expired digest within MaxStale: %+v, %v; want %s, stale", res, ok, want)
	}
	c.Advance(2 * time.Hour) // past MaxStale
	if res, ok := r.Stale(request(ref)); ok {
		t.Errorf("digest past MaxStale answered: %+v", res)
	}
	if n := reg.count(http.MethodHead, "app", "v1"); n != before {
		t.Errorf("Stale sent %d manifest requests", n-before)
	}
}

// With the pod's pull secrets in play the answer depends on reading them, which may block:
// Cached leaves those requests to Resolve.
func TestCachedLeavesPodSecretsToResolve(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	reg.push(t, "app:v1")
	opts := resolve.Options{PodSecrets: func(context.Context, string, []string) (authn.Keychain, string, error) {
		return authn.DefaultKeychain, "ns/s@1", nil
	}}
	r := newResolver(t, newClock(), opts, reg)
	ref := reg.ref(t, "app:v1")
	req := contract.ResolveRequest{Ref: ref, Upstream: ref, Namespace: "ns", PullSecrets: []string{"s"}}
	if _, err := r.Resolve(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	if o, ok := r.Cached(req); ok {
		t.Errorf("answered a request that needs the pod's secrets: %+v", o)
	}
	if o, ok := r.Cached(request(ref)); ok {
		t.Errorf("answered without secrets what was cached with them: %+v", o)
	}
}
