package resolve_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/resolve"
)

// oneCopyAtATime emulates Zot's serialized syncs (its default reqConcurrent): the first
// manifest request for repo starts a copy, which ends when copied is closed, and until then
// every manifest request on the mirror waits, for any repository, cached ones too.
func oneCopyAtATime(tr *testRegistry, repo string, copied <-chan struct{}) func(w http.ResponseWriter, r *http.Request) bool {
	var started atomic.Bool
	return func(_ http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/manifests/") {
			return false
		}
		if strings.HasPrefix(r.URL.Path, "/v2/"+repo+"/manifests/") {
			started.Store(true)
		}
		return started.Load() && waitCopy(tr, r, copied)
	}
}

// One big copy holds the whole mirror (Zot, issue 17's table: oneCopyAtATime): pullgate keeps
// the tags it knew pinned (stale-if-error), does not take the mirror out of pinning for the
// timeouts that queue behind its own background lookup (the mirror's breaker stays closed),
// and pins the next tag once the copy is over.
func TestOneCopyHoldsTheMirror(t *testing.T) {
	t.Parallel()
	mirror := newRegistry(t)
	digests := map[string]string{}
	for _, repo := range []string{"known", "big", "next", "a", "b", "c"} {
		digests[repo] = mirror.push(t, repo+":v1")
	}
	c := newClock()
	r := newResolver(t, c, resolve.Options{CacheTTL: time.Minute, MaxStale: time.Hour, Timeout: 200 * time.Millisecond,
		BackgroundTimeout: time.Minute, BackgroundLookups: 2, BreakerFailures: 2}, mirror)
	req := func(repo string) contract.ResolveRequest { return request(mirror.ref(t, repo+":v1")) }
	if _, err := r.Resolve(context.Background(), req("known")); err != nil {
		t.Fatal(err)
	}
	copied := make(chan struct{})
	mirror.setFault(oneCopyAtATime(mirror, "big", copied))
	c.Advance(2 * time.Minute) // known's digest is past its TTL: the mirror is asked again

	if _, err := resolveWithin(t, r, req("big"), 200*time.Millisecond); !errors.Is(err, resolve.ErrPending) {
		t.Fatalf("big, its copy starting: err = %v, want ErrPending", err)
	}
	got, err := resolveWithin(t, r, req("known"), 200*time.Millisecond)
	if err != nil || got.Digest != digests["known"] || !got.Stale {
		t.Errorf("known tag during the copy: %+v, %v; want %s, stale", got, err, digests["known"])
	}
	for _, repo := range []string{"a", "b", "c"} { // past BackgroundLookups and BreakerFailures
		if _, err := resolveWithin(t, r, req(repo), time.Second); !errors.Is(err, resolve.ErrTimeout) {
			t.Errorf("%s during the copy: err = %v, want ErrTimeout", repo, err)
		}
	}
	if g := circuitOpen(t, mirror.host); g != 0 {
		t.Errorf("pullgate_registry_circuit_open = %v during one repository's copy, want 0", g)
	}

	close(copied)
	if o := waitCached(t, r, req("big"), 10*time.Second); o.Err != nil || o.Digest != digests["big"] {
		t.Errorf("big after its copy: %+v, want %s from the background lookup", o, digests["big"])
	}
	if got, err := resolveWithin(t, r, req("next"), time.Second); err != nil || got.Digest != digests["next"] {
		t.Errorf("next tag after the copy: %+v, %v; want %s", got, err, digests["next"])
	}
}

// Which it cannot tell, at first, from a mirror whose manifests hang for every repository: the
// timeouts behind a background lookup are held, and count for the mirror once the background
// lookups time out too. Then its circuit opens, as TestHungMirrorOpensItsCircuit's does.
func TestHungMirrorOpensItsCircuitBehindBackgroundLookups(t *testing.T) {
	t.Parallel()
	mirror := newRegistry(t)
	for _, repo := range []string{"a:v1", "b:v1", "c:v1"} {
		mirror.push(t, repo)
	}
	mirror.setFault(mirror.hang)
	r := newResolver(t, newClock(), resolve.Options{Timeout: 200 * time.Millisecond, BackgroundTimeout: time.Second,
		BackgroundLookups: 2, BreakerFailures: 3}, mirror)
	for _, repo := range []string{"a:v1", "b:v1", "c:v1"} { // a and b go on in the background, c is held
		if _, err := resolveWithin(t, r, request(mirror.ref(t, repo)), 200*time.Millisecond); !errors.Is(err, resolve.ErrTimeout) {
			t.Fatalf("%s: err = %v, want ErrTimeout", repo, err)
		}
	}
	for end := time.Now().Add(10 * time.Second); circuitOpen(t, mirror.host) != 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the mirror's circuit did not open within 10s of its background lookups timing out")
		}
	}
}
