package resolve_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/resolve"
)

// The digest is the one the tag names, whatever the manifest kind, and one HEAD finds it.
func TestResolveDigest(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	tests := []struct {
		name string
		push func(t *testing.T, repoTag string) string
	}{
		{"docker image", func(t *testing.T, rt string) string { return reg.pushImage(t, rt, randomImage(t)) }},
		{"oci image", func(t *testing.T, rt string) string { return reg.pushImage(t, rt, ociImage(t)) }},
		{"oci index", func(t *testing.T, rt string) string { return reg.pushIndex(t, rt, randomIndex(t, types.OCIImageIndex)) }},
		{"docker manifest list", func(t *testing.T, rt string) string {
			return reg.pushIndex(t, rt, randomIndex(t, types.DockerManifestList))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			repo := "app/" + strings.ReplaceAll(tt.name, " ", "-")
			want := tt.push(t, repo+":v1")
			r := newResolver(t, newClock(), resolve.Options{}, reg)

			got, err := r.Resolve(context.Background(), request(reg.ref(t, repo+":v1")))
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if got.Digest != want || got.Stale {
				t.Errorf("Resolve = %+v, want digest %s, not stale", got, want)
			}
			if h, g := reg.count(http.MethodHead, repo, "v1"), reg.count(http.MethodGet, repo, "v1"); h != 1 || g != 0 {
				t.Errorf("manifest requests: %d HEAD, %d GET; want 1 HEAD, 0 GET", h, g)
			}
		})
	}
}

// A multi-arch tag pins the index, not the platform image a puller would pick.
func TestResolveIndexNotPlatform(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	idx := randomIndex(t, types.OCIImageIndex)
	want := reg.pushIndex(t, "multi:v1", idx)
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	r := newResolver(t, newClock(), resolve.Options{}, reg)
	got, err := r.Resolve(context.Background(), request(reg.ref(t, "multi:v1")))
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != want {
		t.Fatalf("digest %s, want the index's %s", got.Digest, want)
	}
	for _, d := range m.Manifests {
		if got.Digest == d.Digest.String() {
			t.Errorf("digest %s is the %s platform's", got.Digest, d.Platform)
		}
	}
}

// A HEAD answer without a usable digest falls back to one GET; an answer that cannot be
// pinned is refused.
func TestResolveHeadAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		header   string // header the fault sets on HEAD answers
		value    string // "" deletes it
		wantGet  int
		wantErr  error
		wantText string
	}{
		{name: "no Docker-Content-Digest", header: "Docker-Content-Digest", wantGet: 1},
		{name: "schema 1", header: "Content-Type", value: string(types.DockerManifestSchema1Signed), wantErr: resolve.ErrRegistry, wantText: "unsupported manifest"},
		{name: "sha512 digest", header: "Docker-Content-Digest", value: "sha512:" + strings.Repeat("ab", 64), wantErr: resolve.ErrRegistry, wantText: "digest algorithm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := newRegistry(t)
			want := reg.push(t, "app:v1")
			reg.setFault(func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/manifests/") {
					w = headerRewriter{ResponseWriter: w, key: tt.header, value: tt.value}
					reg.registryHandler(w, r)
					return true
				}
				return false
			})
			r := newResolver(t, newClock(), resolve.Options{}, reg)
			got, err := r.Resolve(context.Background(), request(reg.ref(t, "app:v1")))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantText) {
					t.Fatalf("Resolve = %+v, %v; want %v mentioning %q", got, err, tt.wantErr, tt.wantText)
				}
				return
			}
			if err != nil || got.Digest != want {
				t.Fatalf("Resolve = %+v, %v; want %s", got, err, want)
			}
			if h, g := reg.count(http.MethodHead, "app", "v1"), reg.count(http.MethodGet, "app", "v1"); h != 1 || g != tt.wantGet {
				t.Errorf("manifest requests: %d HEAD, %d GET; want 1 HEAD, %d GET", h, g, tt.wantGet)
			}
		})
	}
}

// headerRewriter changes one response header just before the status is written.
type headerRewriter struct {
	http.ResponseWriter
	key, value string
}

func (h headerRewriter) WriteHeader(code int) {
	if h.value == "" {
		h.Header().Del(h.key)
	} else {
		h.Header().Set(h.key, h.value)
	}
	h.ResponseWriter.WriteHeader(code)
}

// A moved tag is seen once the TTL has passed, not before.
func TestResolveTagMoved(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	c := newClock()
	r := newResolver(t, c, resolve.Options{CacheTTL: time.Minute}, reg)
	ref := reg.ref(t, "app:latest")
	first := reg.push(t, "app:latest")

	resolveTo := func(want string, heads int) {
		t.Helper()
		got, err := r.Resolve(context.Background(), request(ref))
		if err != nil || got.Digest != want || got.Stale {
			t.Fatalf("Resolve = %+v, %v; want %s, fresh", got, err, want)
		}
		if n := reg.count(http.MethodHead, "app", "latest"); n != heads {
			t.Fatalf("%d HEAD requests, want %d", n, heads)
		}
	}
	resolveTo(first, 1)
	second := reg.push(t, "app:latest")
	c.Advance(59 * time.Second)
	resolveTo(first, 1) // still cached
	c.Advance(2 * time.Second)
	resolveTo(second, 2)
}

// Not found is an answer: cached for NegativeTTL, never served stale, never retried.
func TestResolveNotFound(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	c := newClock()
	r := newResolver(t, c, resolve.Options{NegativeTTL: 10 * time.Second}, reg)
	reg.push(t, "app:v1")
	for _, repoTag := range []string{"app:missing", "nothing:v1"} {
		ref := reg.ref(t, repoTag)
		repo, tag := ref.RepositoryStr(), ref.TagStr()
		for i, wantHeads := range []int{1, 1, 2} {
			if i == 2 {
				c.Advance(11 * time.Second)
			}
			_, err := r.Resolve(context.Background(), request(ref))
			if !errors.Is(err, resolve.ErrNotFound) {
				t.Fatalf("%s call %d: err = %v, want ErrNotFound", repoTag, i, err)
			}
			if !strings.Contains(err.Error(), ref.String()) {
				t.Errorf("error %q does not name the image", err)
			}
			if n := reg.count(http.MethodHead, repo, tag); n != wantHeads {
				t.Errorf("%s call %d: %d HEAD requests, want %d", repoTag, i, n, wantHeads)
			}
		}
	}
}

// 200 concurrent resolutions of one new tag make exactly one manifest request.
func TestResolveSingleflight(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	want := reg.push(t, "app:v1")
	r := newResolver(t, newClock(), resolve.Options{}, reg)
	ref := reg.ref(t, "app:v1")

	const n = 200
	start := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			got, err := r.Resolve(context.Background(), request(ref))
			if err == nil && got.Digest != want {
				err = errors.New("digest " + got.Digest + ", want " + want)
			}
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := reg.manifestRequests(); got != 1 {
		t.Errorf("%d manifest requests for %d concurrent resolutions, want 1", got, n)
	}
}

// A caller that leaves returns at once; the shared call it started goes on and serves the
// callers that stay.
func TestResolveCallerLeavesSharedCall(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	want := reg.push(t, "app:v1")
	arrived, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	reg.setFault(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/manifests/") {
			once.Do(func() { close(arrived) })
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		return false
	})
	r := newResolver(t, newClock(), resolve.Options{}, reg)
	ref := reg.ref(t, "app:v1")

	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := r.Resolve(ctx, request(ref))
		first <- err
	}()
	<-arrived
	cancelled := time.Now()
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Errorf("leaving caller: err = %v, want context.Canceled", err)
	}
	if took := time.Since(cancelled); took > 100*time.Millisecond {
		t.Errorf("leaving caller returned %s after cancel, want within 100ms", took)
	}

	second := make(chan contract.Resolution, 1)
	go func() {
		res, err := r.Resolve(context.Background(), request(ref))
		if err != nil {
			t.Error(err)
		}
		second <- res
	}()
	close(release)
	if got := <-second; got.Digest != want {
		t.Errorf("staying caller: digest %s, want %s", got.Digest, want)
	}
	if n := reg.manifestRequests(); n != 1 {
		t.Errorf("%d manifest requests, want 1: the shared call must survive its first caller", n)
	}
}

// A cancelled or expired context returns promptly with a typed error.
func TestResolveContextEnds(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	reg.push(t, "app:v1")
	reg.setFault(reg.hang)
	tests := []struct {
		name    string
		ctx     func() (context.Context, context.CancelFunc)
		wantErr []error
	}{
		{"cancelled before", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, []error{context.Canceled}},
		{"cancelled during", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			return ctx, cancel
		}, []error{context.Canceled}},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 50*time.Millisecond)
		}, []error{resolve.ErrTimeout, context.DeadlineExceeded}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newResolver(t, newClock(), resolve.Options{}, reg)
			ctx, cancel := tt.ctx()
			defer cancel()
			start := time.Now()
			_, err := r.Resolve(ctx, request(reg.ref(t, "app:v1")))
			for _, want := range tt.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("err = %v, want errors.Is %v", err, want)
				}
			}
			if took := time.Since(start); took > 150*time.Millisecond {
				t.Errorf("took %s, want within 50ms + 100ms", took)
			}
		})
	}
}

// Registry failures: every call ends within its deadline + 100 ms, with a typed error naming
// the image and never the credentials, or with the previous digest marked stale.
func TestResolveFaults(t *testing.T) {
	t.Parallel()
	const deadline = 500 * time.Millisecond
	tests := []struct {
		name    string
		tls     bool
		inject  func(t *testing.T, reg *testRegistry)
		wantErr error
	}{
		{"500", false, func(t *testing.T, reg *testRegistry) { reg.setFault(status(http.StatusInternalServerError)) }, resolve.ErrRegistry},
		{"429", false, func(t *testing.T, reg *testRegistry) { reg.setFault(status(http.StatusTooManyRequests)) }, resolve.ErrRegistry},
		{"hang", false, func(t *testing.T, reg *testRegistry) { reg.setFault(reg.hang) }, resolve.ErrTimeout},
		{"connection refused", false, func(t *testing.T, reg *testRegistry) { reg.srv.Close() }, resolve.ErrRegistry},
		{"untrusted certificate", true, func(t *testing.T, reg *testRegistry) {
			reg.cert.Store(untrustedCert(t))
			reg.srv.CloseClientConnections()
		}, resolve.ErrRegistry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var reg *testRegistry
			if tt.tls {
				reg = newRegistry(t, withTLS)
			} else {
				reg = newRegistry(t)
			}
			c := newClock()
			opts := resolve.Options{
				CacheTTL: time.Minute, MaxStale: time.Hour,
				// The shared call outlives the callers' deadline; the breaker stays out of it.
				Timeout: 2 * deadline, BreakerFailures: 1000,
				Registries: map[string]resolve.Registry{reg.host: {
					Insecure: !tt.tls, CABundle: reg.caBundle(),
					Auth: basicAuth("robot", "s3cret-password"), CredentialID: "robot@1",
				}},
			}
			r := newResolver(t, c, opts, reg)
			cached, fresh := reg.ref(t, "app:cached"), reg.ref(t, "app:fresh")
			old := reg.push(t, "app:cached")
			reg.push(t, "app:fresh")
			if got, err := r.Resolve(context.Background(), request(cached)); err != nil || got.Digest != old {
				t.Fatalf("before the fault: %+v, %v", got, err)
			}

			tt.inject(t, reg)
			c.Advance(2 * time.Minute) // expired, within MaxStale

			got, err := resolveWithin(t, r, request(cached), deadline)
			if err != nil || got.Digest != old || !got.Stale {
				t.Errorf("cached tag: Resolve = %+v, %v; want %s, stale", got, err, old)
			}
			_, err = resolveWithin(t, r, request(fresh), deadline)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("uncached tag: err = %v, want %v", err, tt.wantErr)
			}
			if msg := err.Error(); !strings.Contains(msg, fresh.String()) || strings.Contains(msg, "s3cret") {
				t.Errorf("error %q must name %s and no credential", msg, fresh)
			}
			c.Advance(2 * time.Hour) // past MaxStale: the error, not the old digest
			if _, err := resolveWithin(t, r, request(cached), deadline); !errors.Is(err, tt.wantErr) {
				t.Errorf("past MaxStale: err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// A transient 5xx or 429 gets exactly one quick retry; other answers none.
func TestResolveRetry(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		code      int
		failures  int // answered with code before the registry answers normally
		wantHeads int
		wantErr   error
	}{
		{"one 503 is retried", http.StatusServiceUnavailable, 1, 2, nil},
		{"one 429 is retried", http.StatusTooManyRequests, 1, 2, nil},
		{"500s get one retry", http.StatusInternalServerError, 100, 2, resolve.ErrRegistry},
		{"401 is not retried", http.StatusUnauthorized, 100, 1, resolve.ErrUnauthorized},
		{"404 is not retried", http.StatusNotFound, 100, 1, resolve.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := newRegistry(t)
			want := reg.push(t, "app:v1")
			var mu sync.Mutex
			left := tt.failures
			reg.setFault(func(w http.ResponseWriter, r *http.Request) bool {
				mu.Lock()
				defer mu.Unlock()
				if !strings.Contains(r.URL.Path, "/manifests/") || left == 0 {
					return false
				}
				left--
				w.WriteHeader(tt.code)
				return true
			})
			r := newResolver(t, newClock(), resolve.Options{}, reg)
			got, err := resolveWithin(t, r, request(reg.ref(t, "app:v1")), 2*time.Second)
			switch {
			case tt.wantErr == nil && (err != nil || got.Digest != want):
				t.Errorf("Resolve = %+v, %v; want %s", got, err, want)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if n := reg.count(http.MethodHead, "app", "v1"); n != tt.wantHeads {
				t.Errorf("%d HEAD requests, want %d", n, tt.wantHeads)
			}
		})
	}
}

// The breaker opens after consecutive failures, fails fast while open (stale answers still
// served), lets one probe through after the cooldown, and closes when the registry is back.
func TestCircuitBreaker(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	c := newClock()
	r := newResolver(t, c, resolve.Options{CacheTTL: time.Minute, MaxStale: time.Hour, BreakerFailures: 3, BreakerCooldown: 30 * time.Second}, reg)
	cachedDigest := reg.push(t, "app:cached")
	want := reg.push(t, "app:v1")
	cached, ref := reg.ref(t, "app:cached"), reg.ref(t, "app:v1")
	if _, err := r.Resolve(context.Background(), request(cached)); err != nil {
		t.Fatal(err)
	}

	reg.setFault(status(http.StatusInternalServerError))
	for i := range 3 {
		if _, err := r.Resolve(context.Background(), request(ref)); !errors.Is(err, resolve.ErrRegistry) {
			t.Fatalf("failure %d: err = %v, want ErrRegistry", i, err)
		}
	}
	if got := circuitOpen(t, reg.host); got != 1 {
		t.Errorf("pullgate_registry_circuit_open = %v, want 1", got)
	}

	failsFast := func(when string) {
		t.Helper()
		before := reg.manifestRequests()
		start := time.Now()
		_, err := r.Resolve(context.Background(), request(ref))
		took := time.Since(start)
		if !errors.Is(err, resolve.ErrCircuitOpen) {
			t.Fatalf("%s: err = %v, want ErrCircuitOpen", when, err)
		}
		if took >= 10*time.Millisecond {
			t.Errorf("%s: open circuit took %s to fail, want under 10ms", when, took)
		}
		if reg.manifestRequests() != before {
			t.Errorf("%s: an open circuit sent a request", when)
		}
	}
	failsFast("open")

	c.Advance(2 * time.Minute) // cached entry expires; cooldown passes: the next call probes
	got, err := r.Resolve(context.Background(), request(ref))
	if !errors.Is(err, resolve.ErrRegistry) {
		t.Fatalf("failed probe: %+v, %v; want ErrRegistry", got, err)
	}
	failsFast("reopened after a failed probe")
	if got, err := r.Resolve(context.Background(), request(cached)); err != nil || !got.Stale || got.Digest != cachedDigest {
		t.Errorf("open circuit, expired entry: %+v, %v; want stale %s", got, err, cachedDigest)
	}

	reg.setFault(nil) // the registry recovers
	failsFast("recovered but cooling down")
	c.Advance(31 * time.Second)
	if got, err := r.Resolve(context.Background(), request(ref)); err != nil || got.Digest != want {
		t.Fatalf("probe after recovery: %+v, %v; want %s", got, err, want)
	}
	if got := circuitOpen(t, reg.host); got != 0 {
		t.Errorf("pullgate_registry_circuit_open = %v after recovery, want 0", got)
	}
	if got, err := r.Resolve(context.Background(), request(cached)); err != nil || got.Stale || got.Digest != cachedDigest {
		t.Errorf("closed circuit: %+v, %v; want fresh %s", got, err, cachedDigest)
	}
}

// FallbackToUpstream pins the upstream's digest only when the mirror serves it.
func TestFallbackToUpstream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		fallback      bool
		mirrorHas     bool // the mirror has the upstream's manifest by digest (not the tag)
		wantErr       error
		wantUpstreams int // HEAD requests to the upstream's tag
	}{
		{"mirror serves the digest", true, true, nil, 1},
		{"mirror lacks the digest", true, false, resolve.ErrNotFound, 1},
		{"fallback off", false, true, resolve.ErrNotFound, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			mirror, upstream := newRegistry(t), newRegistry(t)
			img := randomImage(t)
			want := upstream.pushImage(t, "library/app:v1", img)
			if tt.mirrorHas {
				mirror.pushImage(t, "library/app@"+want, img)
			}
			r := newResolver(t, newClock(), resolve.Options{FallbackToUpstream: tt.fallback}, mirror, upstream)
			req := contract.ResolveRequest{Ref: mirror.ref(t, "library/app:v1"), Upstream: upstream.ref(t, "library/app:v1")}
			got, err := r.Resolve(context.Background(), req)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
			} else if err != nil || got.Digest != want {
				t.Fatalf("Resolve = %+v, %v; want %s", got, err, want)
			}
			if n := upstream.count(http.MethodHead, "library/app", "v1"); n != tt.wantUpstreams {
				t.Errorf("%d HEAD requests to the upstream, want %d", n, tt.wantUpstreams)
			}
			if tt.fallback && mirror.count(http.MethodHead, "library/app", want) != 1 {
				t.Errorf("the mirror was not asked for %s", want)
			}
		})
	}
}

// TLS registries are trusted through their CA bundle, and only through it.
func TestResolveTLS(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t, withTLS)
	want := reg.push(t, "app:v1")
	tests := []struct {
		name    string
		bundle  []byte
		wantErr error
	}{
		{"with the CA bundle", reg.caBundle(), nil},
		{"system roots only", nil, resolve.ErrRegistry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newResolver(t, newClock(), resolve.Options{Registries: map[string]resolve.Registry{reg.host: {CABundle: tt.bundle}}})
			got, err := r.Resolve(context.Background(), request(reg.ref(t, "app:v1")))
			if tt.wantErr == nil && (err != nil || got.Digest != want) {
				t.Errorf("Resolve = %+v, %v; want %s", got, err, want)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

// Configure swaps the options and keeps the cache; a bad configuration changes nothing.
func TestConfigureKeepsCache(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	want := reg.push(t, "app:v1")
	c := newClock()
	r := newResolver(t, c, resolve.Options{CacheTTL: time.Minute}, reg)
	ref := reg.ref(t, "app:v1")
	if _, err := r.Resolve(context.Background(), request(ref)); err != nil {
		t.Fatal(err)
	}

	err := r.Configure(resolve.Options{CacheTTL: -time.Second, CacheSize: -1})
	if err == nil || !strings.Contains(err.Error(), "cacheTTL") || !strings.Contains(err.Error(), "cacheSize") {
		t.Fatalf("Configure(invalid) = %v, want both problems", err)
	}
	if err := r.Configure(resolve.Options{
		CacheTTL: 10 * time.Minute, CacheSize: 10, Now: c.Now,
		Registries: map[string]resolve.Registry{reg.host: {Insecure: true}},
	}); err != nil {
		t.Fatal(err)
	}
	c.Advance(5 * time.Minute) // expired under the old TTL, fresh under the new one
	got, err := r.Resolve(context.Background(), request(ref))
	if err != nil || got.Digest != want || got.Stale {
		t.Fatalf("after Configure: %+v, %v; want %s", got, err, want)
	}
	if n := reg.count(http.MethodHead, "app", "v1"); n != 1 {
		t.Errorf("%d HEAD requests, want 1: the cache must survive Configure", n)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	_, err := resolve.New(resolve.Options{
		MaxStale: -1, NegativeTTL: -1, Timeout: -1, BreakerFailures: -1,
		Registries: map[string]resolve.Registry{
			"docker.io":       {},
			"index.docker.io": {},
			"bad.example":     {CABundle: []byte("not PEM")},
		},
	})
	if err == nil {
		t.Fatal("New accepted invalid options")
	}
	for _, want := range []string{"maxStale", "negativeTTL", "timeout", "breakerFailures", "listed twice", "bad.example: caBundle"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// Results obtained with a pod's pull secrets are cached under their identity only.
func TestPodSecrets(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	want := reg.push(t, "private:v1")
	reg.setFault(requireBasic("tenant", "tenant-pass"))
	opts := resolve.Options{PodSecrets: func(_ context.Context, ns string, names []string) (authn.Keychain, string, error) {
		if ns == "broken" {
			return nil, "", errors.New("secrets not readable")
		}
		if len(names) == 1 && names[0] == "good" {
			return keychainFor(reg.host, "tenant", "tenant-pass"), ns + "/good@7", nil
		}
		return keychainFor(reg.host, "tenant", "wrong"), ns + "/" + strings.Join(names, ",") + "@1", nil
	}}
	r := newResolver(t, newClock(), opts, reg)
	ref := reg.ref(t, "private:v1")
	req := func(ns string, secrets ...string) contract.ResolveRequest {
		return contract.ResolveRequest{Ref: ref, Upstream: ref, Namespace: ns, PullSecrets: secrets}
	}
	steps := []struct {
		name      string
		req       contract.ResolveRequest
		wantErr   error
		wantHeads int // HEAD requests this step sends
	}{
		{"good secret", req("a", "good"), nil, 1},
		{"good secret, cached", req("a", "good"), nil, 0},
		{"no secret is not served the private answer", req(""), resolve.ErrUnauthorized, 1},
		{"wrong secret is not served it either", req("b", "other"), resolve.ErrUnauthorized, 1},
		{"hook error", req("broken", "good"), resolve.ErrUnauthorized, 0},
	}
	for _, s := range steps {
		before := reg.count(http.MethodHead, "private", "v1")
		got, err := r.Resolve(context.Background(), s.req)
		if s.wantErr == nil && (err != nil || got.Digest != want) {
			t.Errorf("%s: %+v, %v; want %s", s.name, got, err, want)
		}
		if s.wantErr != nil && !errors.Is(err, s.wantErr) {
			t.Errorf("%s: err = %v, want %v", s.name, err, s.wantErr)
		}
		if err != nil && (strings.Contains(err.Error(), "tenant-pass") || strings.Contains(err.Error(), "wrong")) {
			t.Errorf("%s: error %q leaks a credential", s.name, err)
		}
		if n := reg.count(http.MethodHead, "private", "v1") - before; n != s.wantHeads {
			t.Errorf("%s: %d HEAD requests, want %d", s.name, n, s.wantHeads)
		}
	}
}

// Registry.Auth is used for its host.
func TestRegistryAuth(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	want := reg.push(t, "private:v1")
	reg.setFault(requireBasic("robot", "robot-pass"))
	tests := []struct {
		name    string
		reg     resolve.Registry
		wantErr error
	}{
		{"credentials", resolve.Registry{Insecure: true, Auth: basicAuth("robot", "robot-pass"), CredentialID: "robot@1"}, nil},
		{"anonymous", resolve.Registry{Insecure: true}, resolve.ErrUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newResolver(t, newClock(), resolve.Options{Registries: map[string]resolve.Registry{reg.host: tt.reg}})
			got, err := r.Resolve(context.Background(), request(reg.ref(t, "private:v1")))
			if tt.wantErr == nil && (err != nil || got.Digest != want) {
				t.Errorf("Resolve = %+v, %v; want %s", got, err, want)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}
