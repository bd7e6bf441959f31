package resolve_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	ggcrmutate "github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/resolve"
)

var _ contract.Warmer = (*resolve.Resolver)(nil)

// platformIndex is an index of one random image per platform ("linux/amd64"), and the images.
func platformIndex(t testing.TB, platforms ...string) (v1.ImageIndex, map[string]v1.Image) {
	t.Helper()
	var adds []ggcrmutate.IndexAddendum
	images := map[string]v1.Image{}
	for _, p := range platforms {
		img, err := random.Image(4096, 2)
		if err != nil {
			t.Fatal(err)
		}
		os, arch, _ := strings.Cut(p, "/")
		images[p] = img
		adds = append(adds, ggcrmutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: os, Architecture: arch}}})
	}
	return ggcrmutate.AppendManifests(empty.Index, adds...), images
}

// blobsOf returns the config and layer digests of img.
func blobsOf(t testing.TB, img v1.Image) map[string]int64 {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{m.Config.Digest.String(): m.Config.Size}
	for _, l := range m.Layers {
		out[l.Digest.String()] = l.Size
	}
	return out
}

func warmRef(t testing.TB, tr *testRegistry, repo, digest string) name.Digest {
	t.Helper()
	d, err := name.NewDigest(tr.host + "/" + repo + "@" + digest)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// blobGETs counts blob requests per method and digest since the last requestCounts.
func blobRequests(tr *testRegistry, method string) map[string]int {
	out := map[string]int{}
	for k, n := range tr.requestCounts() {
		m, path, _ := strings.Cut(k, " ")
		if _, d, ok := strings.Cut(path, "/blobs/"); ok && m == method {
			out[d] += n
		}
	}
	return out
}

// Warm reads the index, the manifest of the nodes' platform and each of its blobs exactly once,
// to the end; other platforms' blobs are left alone. Start sees the total first; Progress sees
// every byte.
func TestWarmReadsThePlatformsBlobs(t *testing.T) {
	t.Parallel()
	tr := newRegistry(t)
	idx, images := platformIndex(t, "linux/amd64", "linux/arm64")
	d := tr.pushIndex(t, "app:v1", idx)
	r := newResolver(t, newClock(), resolve.Options{}, tr)
	tr.requestCounts()

	want := blobsOf(t, images["linux/amd64"])
	var total int64
	var progress atomic.Int64
	var started int
	res, err := r.Warm(context.Background(), contract.WarmRequest{
		Ref:       warmRef(t, tr, "app", d),
		Platforms: []contract.Platform{{OS: "linux", Architecture: "amd64"}},
		Start:     func(n int64, blobs int) error { total, started = n, blobs; return nil },
		Progress:  func(n int64) { progress.Add(n) }, // called from the blob readers, concurrently
	})
	if err != nil {
		t.Fatal(err)
	}
	var size int64
	for _, s := range want {
		size += s
	}
	if res.Blobs != len(want) || res.Bytes != size || res.Manifests != 2 {
		t.Errorf("result %+v, want %d blobs, %d bytes, 2 manifests", res, len(want), size)
	}
	if total != size || started != len(want) {
		t.Errorf("Start(%d, %d), want (%d, %d)", total, started, size, len(want))
	}
	if progress.Load() != size {
		t.Errorf("Progress saw %d bytes, want %d", progress.Load(), size)
	}
	got := blobRequests(tr, http.MethodGet)
	for dg := range want {
		if got[dg] != 1 {
			t.Errorf("blob %s read %d times, want once", dg, got[dg])
		}
	}
	for dg := range blobsOf(t, images["linux/arm64"]) {
		if got[dg] != 0 {
			t.Errorf("arm64 blob %s read %d times, want never", dg, got[dg])
		}
	}
}

// CheckOnly sends HEADs, no GET, and reports the blobs the mirror lacks.
func TestWarmCheckOnly(t *testing.T) {
	t.Parallel()
	tr := newRegistry(t)
	img, err := random.Image(1024, 3)
	if err != nil {
		t.Fatal(err)
	}
	d := tr.pushImage(t, "app:v1", img)
	layers, _ := img.Layers()
	gone, _ := layers[1].Digest()
	tr.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/blobs/"+gone.String()) {
			w.WriteHeader(http.StatusNotFound)
			return true
		}
		return false
	})
	r := newResolver(t, newClock(), resolve.Options{}, tr)
	tr.requestCounts()
	res, err := r.Warm(context.Background(), contract.WarmRequest{Ref: warmRef(t, tr, "app", d), CheckOnly: true})
	var f *contract.WarmFailure
	if !errors.As(err, &f) || f.Outcome != contract.WarmMissing || f.Retry {
		t.Fatalf("err = %v, want outcome %s without retry", err, contract.WarmMissing)
	}
	if len(res.Missing) != 1 || res.Missing[0] != gone.String() || res.Blobs != 3 {
		t.Errorf("result %+v, want 3 found and %s missing", res, gone)
	}
	if n := len(blobRequests(tr, http.MethodGet)); n != 0 {
		t.Errorf("%d blobs fetched, want none", n)
	}
}

// Faults end in their outcome, in one attempt each: Warm never retries by itself.
func TestWarmFaults(t *testing.T) {
	t.Parallel()
	blobFault := func(f func(w http.ResponseWriter, r *http.Request)) func(tr *testRegistry) func(http.ResponseWriter, *http.Request) bool {
		return func(tr *testRegistry) func(http.ResponseWriter, *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/blobs/") || r.Method != http.MethodGet {
					return false
				}
				f(w, r)
				return true
			}
		}
	}
	tests := []struct {
		name       string
		fault      func(tr *testRegistry) func(http.ResponseWriter, *http.Request) bool
		timeout    time.Duration
		outcome    string
		retry      bool
		retryAfter time.Duration
	}{
		{name: "429", fault: blobFault(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(http.StatusTooManyRequests)
		}), outcome: contract.WarmRateLimited, retry: true, retryAfter: 7 * time.Second},
		// Registries rate-limit manifests (Docker Hub counts pulls there) and, behind a proxy
		// over its quota, every request including the handshake's GET /v2/: the wait they ask
		// for is kept from either.
		{name: "429 on the manifest", fault: func(*testRegistry) func(http.ResponseWriter, *http.Request) bool {
			return func(w http.ResponseWriter, r *http.Request) bool {
				if !strings.Contains(r.URL.Path, "/manifests/") {
					return false
				}
				w.Header().Set("Retry-After", "45")
				w.WriteHeader(http.StatusTooManyRequests)
				return true
			}
		}, outcome: contract.WarmRateLimited, retry: true, retryAfter: 45 * time.Second},
		{name: "429 on every request", fault: func(*testRegistry) func(http.ResponseWriter, *http.Request) bool {
			return func(w http.ResponseWriter, _ *http.Request) bool {
				w.Header().Set("Retry-After", "45")
				w.WriteHeader(http.StatusTooManyRequests)
				return true
			}
		}, outcome: contract.WarmRateLimited, retry: true, retryAfter: 45 * time.Second},
		{name: "upstream gone (502)", fault: blobFault(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusBadGateway)
		}), outcome: contract.WarmServerError, retry: true},
		{name: "blob unknown", fault: blobFault(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusNotFound)
		}), outcome: contract.WarmNotFound, retry: true},
		{name: "bytes do not match the digest", fault: func(tr *testRegistry) func(http.ResponseWriter, *http.Request) bool {
			return blobFault(func(w http.ResponseWriter, r *http.Request) {
				rec := &corrupting{ResponseWriter: w}
				tr.registryHandler(rec, r)
			})(tr)
		}, outcome: contract.WarmDigestMismatch},
		{name: "hang mid-blob", fault: func(tr *testRegistry) func(http.ResponseWriter, *http.Request) bool {
			return blobFault(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "1000000")
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write(make([]byte, 10))
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
				case <-tr.done:
				}
			})(tr)
		}, timeout: 300 * time.Millisecond, outcome: contract.WarmTimeout, retry: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr := newRegistry(t)
			d := tr.push(t, "app:v1")
			tr.setFault(tt.fault(tr))
			r := newResolver(t, newClock(), resolve.Options{}, tr)
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			tr.requestCounts()
			start := time.Now()
			_, err := r.Warm(ctx, contract.WarmRequest{Ref: warmRef(t, tr, "app", d)})
			var f *contract.WarmFailure
			if !errors.As(err, &f) {
				t.Fatalf("err = %v, want a WarmFailure", err)
			}
			if f.Outcome != tt.outcome || f.Retry != tt.retry || f.RetryAfter != tt.retryAfter {
				t.Errorf("failure %s retry=%v after=%s (%v), want %s retry=%v after=%s", f.Outcome, f.Retry, f.RetryAfter, f.Err, tt.outcome, tt.retry, tt.retryAfter)
			}
			if tt.timeout > 0 && time.Since(start) > tt.timeout+time.Second {
				t.Errorf("Warm returned %s after its deadline", time.Since(start)-tt.timeout)
			}
			for dg, n := range blobRequests(tr, http.MethodGet) {
				if n > 1 {
					t.Errorf("blob %s asked %d times, want at most once", dg, n)
				}
			}
		})
	}
}

// corrupting flips the first byte of a blob's body: the right size, the wrong bytes.
type corrupting struct {
	http.ResponseWriter
	done bool
}

func (c *corrupting) Write(b []byte) (int, error) {
	if !c.done && len(b) > 0 {
		c.done = true
		b = append([]byte{b[0] ^ 0xff}, b[1:]...)
	}
	return c.ResponseWriter.Write(b)
}

// A failing mirror opens its breaker for warming as for resolving: after the threshold, Warm
// fails at once with circuit_open and sends nothing.
func TestWarmBreaker(t *testing.T) {
	t.Parallel()
	tr := newRegistry(t)
	d := tr.push(t, "app:v1")
	tr.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/manifests/") {
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	r := newResolver(t, newClock(), resolve.Options{BreakerFailures: 2}, tr)
	req := contract.WarmRequest{Ref: warmRef(t, tr, "app", d)}
	for range 2 {
		if _, err := r.Warm(context.Background(), req); err == nil {
			t.Fatal("Warm succeeded against a 503")
		}
	}
	tr.requestCounts()
	_, err := r.Warm(context.Background(), req)
	var f *contract.WarmFailure
	if !errors.As(err, &f) || f.Outcome != contract.WarmCircuitOpen || !f.Retry || f.RetryAfter <= 0 {
		t.Fatalf("err = %v, want circuit_open with a retry time", err)
	}
	if n := tr.requestCounts(); len(n) != 0 {
		t.Errorf("an open breaker let requests through: %v", n)
	}
}

// A cancelled context ends Warm with canceled, before anything is asked.
func TestWarmCancelled(t *testing.T) {
	t.Parallel()
	tr := newRegistry(t)
	d := tr.push(t, "app:v1")
	r := newResolver(t, newClock(), resolve.Options{}, tr)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := r.Warm(ctx, contract.WarmRequest{Ref: warmRef(t, tr, "app", d)})
	var f *contract.WarmFailure
	if !errors.As(err, &f) || f.Outcome != contract.WarmCanceled || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want canceled", err)
	}
}

// Start's error stops the warm before any blob is read, and comes back as it is.
func TestWarmStartRefuses(t *testing.T) {
	t.Parallel()
	tr := newRegistry(t)
	d := tr.push(t, "app:v1")
	r := newResolver(t, newClock(), resolve.Options{}, tr)
	tr.requestCounts()
	budget := errors.New("over budget")
	_, err := r.Warm(context.Background(), contract.WarmRequest{Ref: warmRef(t, tr, "app", d), Start: func(int64, int) error { return budget }})
	if !errors.Is(err, budget) {
		t.Fatalf("err = %v, want the budget error", err)
	}
	if n := len(blobRequests(tr, http.MethodGet)); n != 0 {
		t.Errorf("%d blobs read after Start refused", n)
	}
}
