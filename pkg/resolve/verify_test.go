package resolve_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pullgate/pullgate/pkg/resolve"
)

// byDigest answers manifest requests by digest with f, and leaves the others to the registry.
func byDigest(f func(w http.ResponseWriter, r *http.Request)) func(http.ResponseWriter, *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/manifests/sha256:") {
			return false
		}
		f(w, r)
		return true
	}
}

// With VerifyDigest, a digest the registry names for a tag but does not serve is not pinned: it
// is "not found", and remembered as such. Without it, the tag's answer is taken as it comes.
func TestVerifyDigest(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	lost := reg.push(t, "app:lost")
	kept := reg.push(t, "app:kept")
	reg.setFault(byDigest(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, lost) {
			http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`, http.StatusNotFound)
			return
		}
		reg.registryHandler(w, r)
	}))
	c := newClock()
	trusting := newResolver(t, c, resolve.Options{}, reg)
	verifying := newResolver(t, c, resolve.Options{VerifyDigest: true, NegativeTTL: 10 * time.Second}, reg)

	if got, err := trusting.Resolve(context.Background(), request(reg.ref(t, "app:lost"))); err != nil || got.Digest != lost {
		t.Fatalf("without VerifyDigest: %+v, %v; want %s, the tag's answer", got, err, lost)
	}
	if n := reg.count(http.MethodHead, "app", lost); n != 0 {
		t.Errorf("without VerifyDigest the digest was asked for %d times", n)
	}

	_, err := verifying.Resolve(context.Background(), request(reg.ref(t, "app:lost")))
	if !errors.Is(err, resolve.ErrNotFound) || !strings.Contains(err.Error(), "names "+lost+" for the tag but does not serve it") {
		t.Fatalf("err = %v, want ErrNotFound saying the registry does not serve %s", err, lost)
	}
	if _, err := verifying.Resolve(context.Background(), request(reg.ref(t, "app:lost"))); !errors.Is(err, resolve.ErrNotFound) {
		t.Fatalf("again, within NegativeTTL: err = %v, want ErrNotFound from the cache", err)
	}
	if tags, digests := reg.count(http.MethodHead, "app", "lost"), reg.count(http.MethodHead, "app", lost); tags != 2 || digests != 1 {
		t.Errorf("%d HEAD requests for the tag (one each resolver), %d for the digest; want 2 and 1", tags, digests)
	}

	for i := range 2 { // the second time from the cache, not verified again
		if got, err := verifying.Resolve(context.Background(), request(reg.ref(t, "app:kept"))); err != nil || got.Digest != kept {
			t.Fatalf("call %d: %+v, %v; want %s", i, got, err, kept)
		}
	}
	if tags, digests := reg.count(http.MethodHead, "app", "kept"), reg.count(http.MethodHead, "app", kept); tags != 1 || digests != 1 {
		t.Errorf("a served digest: %d HEAD requests for the tag, %d for the digest; want 1 and 1", tags, digests)
	}
}
