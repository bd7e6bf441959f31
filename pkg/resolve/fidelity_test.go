package resolve_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	ggcrmutate "github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/resolve"
)

// copies is what an emulated mirror does to an image it copies from its upstream.
type copies int

const (
	// zotDefault: Zot's sync with its default configuration converts Docker v2 manifests and
	// lists to OCI and leaves attestation entries out of indexes.
	zotDefault copies = iota
	// zotPreserving: Zot with preserveDigest: true and compat: [docker2s2], byte for byte.
	zotPreserving
	// harborTrimming: a Harbor proxy cache serving a multi-arch list without its attestations.
	harborTrimming
)

// syncing emulates a mirror's on-demand sync, as Zot and Harbor do it: the first manifest
// request for a tag copies the tag's image from upstream into the mirror, as how says, and the
// mirror then answers. Neither Zot nor Harbor can run here; the copying is what they were
// measured doing (issue 17). Copies run one at a time.
func syncing(t *testing.T, mirror *testRegistry, upstream string, how copies) func(w http.ResponseWriter, r *http.Request) bool {
	var mu sync.Mutex
	synced := map[string]bool{}
	return func(_ http.ResponseWriter, r *http.Request) bool {
		repo, tag, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/manifests/")
		if !ok || strings.HasPrefix(tag, "sha256:") || strings.Contains(r.UserAgent(), pushAgent) {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		if synced[repo+":"+tag] {
			return false
		}
		synced[repo+":"+tag] = true
		if err := copyImage(upstream+"/"+repo+":"+tag, mirror, repo+":"+tag, how); err != nil {
			t.Errorf("emulated sync of %s:%s: %v", repo, tag, err)
		}
		return false
	}
}

func copyImage(src string, mirror *testRegistry, repoTag string, how copies) error {
	ref, err := name.NewTag(src, name.Insecure)
	if err != nil {
		return err
	}
	desc, err := remote.Get(ref)
	if err != nil {
		return err
	}
	dst, err := name.NewTag(mirror.host+"/"+repoTag, name.Insecure)
	if err != nil {
		return err
	}
	if !desc.MediaType.IsIndex() {
		img, err := desc.Image()
		if err != nil {
			return err
		}
		if how == zotDefault {
			img = toOCI(img)
		}
		return remote.Write(dst, img, mirror.remoteOpts()...)
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return err
	}
	if how == zotPreserving {
		return remote.WriteIndex(dst, idx, mirror.remoteOpts()...)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	mt := im.MediaType
	if how == zotDefault {
		mt = types.OCIImageIndex
	}
	out := ggcrmutate.IndexMediaType(empty.Index, mt)
	for _, d := range im.Manifests {
		if isAttestation(d) {
			continue
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			return err
		}
		if how == zotDefault {
			img = toOCI(img)
		}
		out = ggcrmutate.AppendManifests(out, ggcrmutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: d.Platform, Annotations: d.Annotations}})
	}
	return remote.WriteIndex(dst, out, mirror.remoteOpts()...)
}

func toOCI(img v1.Image) v1.Image {
	return ggcrmutate.ConfigMediaType(ggcrmutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
}

func isAttestation(d v1.Descriptor) bool {
	return d.Annotations["vnd.docker.reference.type"] == "attestation-manifest"
}

// multiArch is an index of mt with two platforms and, as BuildKit writes it, an attestation
// manifest for the first.
func multiArch(t *testing.T, mt types.MediaType) v1.ImageIndex {
	t.Helper()
	image := randomImage
	if mt == types.OCIImageIndex {
		image = ociImage
	}
	idx := ggcrmutate.IndexMediaType(empty.Index, mt)
	amd := image(t)
	amdDigest, err := amd.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return ggcrmutate.AppendManifests(idx,
		ggcrmutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		ggcrmutate.IndexAddendum{Add: image(t), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		ggcrmutate.IndexAddendum{Add: ociImage(t), Descriptor: v1.Descriptor{
			Platform:    &v1.Platform{OS: "unknown", Architecture: "unknown"},
			Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": amdDigest.String()},
		}},
	)
}

// waitCompared waits until the comparison for req's mirror digest has ended.
func waitCompared(t *testing.T, r *resolve.Resolver, req contract.ResolveRequest, digest string) {
	t.Helper()
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if resolve.Compared(r, req, digest) {
			return
		}
	}
	t.Fatalf("the digest of %s was not compared with the upstream's within 20s", req.Ref)
}

func mismatches(t *testing.T, mirror, cause string) float64 {
	t.Helper()
	return gauge(t, "pullgate_digest_mismatch_total", prometheus.Labels{"mirror": mirror, "cause": cause})
}

// Against a real upstream (Distribution v3.1.2 and Debian's 2.8.2, standing in for Docker Hub)
// and mirrors that copy as Zot and Harbor were measured to (emulated: see syncing), the first
// resolution pins the mirror's digest; a comparison in the background then finds, for each
// shape, whether the upstream's differs and why, and the next admission of the tag carries it
// (the handler turns it into a warning), counted once in pullgate_digest_mismatch_total.
func TestDigestFidelity(t *testing.T) {
	t.Parallel()
	dockerList := func(t *testing.T, up *testRegistry, rt string) string {
		return up.pushIndex(t, rt, multiArch(t, types.DockerManifestList))
	}
	dockerImage := func(t *testing.T, up *testRegistry, rt string) string { return up.push(t, rt) }
	tests := []struct {
		name      string
		push      func(t *testing.T, up *testRegistry, repoTag string) string
		how       copies
		preserves bool   // the policy declares the mirror preserves digests
		cause     string // "" when the digests agree
	}{
		{"docker image, Zot", dockerImage, zotDefault, false, contract.CauseConversion},
		{"docker list, Zot", dockerList, zotDefault, false, contract.CauseConversion},
		{"OCI image, Zot", func(t *testing.T, up *testRegistry, rt string) string { return up.pushImage(t, rt, ociImage(t)) }, zotDefault, false, ""},
		{"OCI index, Zot", func(t *testing.T, up *testRegistry, rt string) string {
			return up.pushIndex(t, rt, multiArch(t, types.OCIImageIndex))
		}, zotDefault, false, contract.CauseTrimmedIndex},
		{"docker list, Harbor", dockerList, harborTrimming, false, contract.CauseTrimmedIndex},
		{"docker list, Zot preserving", dockerList, zotPreserving, true, ""},
		{"docker image, Zot declared preserving", dockerImage, zotDefault, true, contract.CauseConversion},
	}
	for version, binary := range map[string]func(t *testing.T) string{"v3.1.2": registryV3, "v2.8.2": func(*testing.T) string { return distributionBinary }} {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			upstream := &testRegistry{host: startPullThroughWith(t, binary(t), "")}
			upstream.pushes = http.DefaultTransport.(*http.Transport).Clone()
			t.Cleanup(upstream.pushes.CloseIdleConnections)
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					t.Parallel()
					repo := "library/" + strings.NewReplacer(" ", "-", ",", "").Replace(strings.ToLower(tt.name))
					fidelityCase(t, upstream, repo, tt.push(t, upstream, repo+":v1"), tt.how, tt.preserves, tt.cause)
				})
			}
		})
	}
}

// fidelityCase resolves repo:v1 through a mirror that copies it from upstream as how says,
// and checks what the comparison found: cause, or no mismatch when cause is "".
func fidelityCase(t *testing.T, upstream *testRegistry, repo, want string, how copies, preserves bool, cause string) {
	t.Helper()
	mirror := newRegistry(t)
	mirror.setFault(syncing(t, mirror, upstream.host, how))
	r := newResolver(t, newClock(), resolve.Options{Timeout: 5 * time.Second, DigestMismatch: resolve.PinMirror,
		Registries: map[string]resolve.Registry{upstream.host: {Insecure: true}, mirror.host: {Insecure: true, PreservesDigests: preserves}}})
	req := contract.ResolveRequest{Ref: mirror.ref(t, repo+":v1"), Upstream: upstream.ref(t, repo+":v1")}
	before := mismatches(t, mirror.host, cause)

	first, err := r.Resolve(context.Background(), req)
	if err != nil || first.Mismatch != nil {
		t.Fatalf("first resolution: %+v, %v; want the mirror's digest, nothing known of the upstream's yet", first, err)
	}
	if (first.Digest == want) != (cause == "") {
		t.Fatalf("the mirror's digest %s, the upstream's %s: want them equal only when no cause is expected", first.Digest, want)
	}
	waitCompared(t, r, req, first.Digest)
	o, ok := r.Cached(req)
	if !ok || o.Err != nil || o.Digest != first.Digest {
		t.Fatalf("next admission: %+v, %v; want the mirror's %s pinned", o, ok, first.Digest)
	}
	if cause == "" {
		if o.Mismatch != nil {
			t.Errorf("mismatch %s where the digests agree", o.Mismatch)
		}
		return
	}
	m := o.Mismatch
	if m == nil || m.Cause != cause || m.UpstreamDigest != want || m.MirrorDigest != first.Digest || m.Declared != preserves || m.PinnedUpstream {
		t.Fatalf("next admission's mismatch: %+v; want cause %s, upstream's %s, declared %v", m, cause, want, preserves)
	}
	t.Logf("warning: %s", m)
	if got := mismatches(t, mirror.host, cause) - before; got != 1 {
		t.Errorf("pullgate_digest_mismatch_total{mirror=%s,cause=%s} grew by %v, want 1", mirror.host, cause, got)
	}
}

// convertedMirror is a mirror serving app:v1 converted to OCI, and the upstream serving it as
// pushed (Docker v2); it returns the request and the upstream's digest.
func convertedMirror(t *testing.T) (mirror, upstream *testRegistry, req contract.ResolveRequest, want string) {
	t.Helper()
	mirror, upstream = newRegistry(t), newRegistry(t)
	img := randomImage(t)
	want = upstream.pushImage(t, "app:v1", img)
	mirror.pushImage(t, "app:v1", toOCI(img))
	return mirror, upstream, contract.ResolveRequest{Ref: mirror.ref(t, "app:v1"), Upstream: upstream.ref(t, "app:v1")}, want
}

// digestMismatch: Upstream pins the upstream's digest when the mirror serves it too, and
// otherwise pins nothing (ErrDiverged: onError applies), saying why either way.
func TestDigestMismatchPinUpstream(t *testing.T) {
	t.Parallel()
	for _, served := range []bool{true, false} {
		t.Run(map[bool]string{true: "mirror serves it", false: "mirror lacks it"}[served], func(t *testing.T) {
			t.Parallel()
			mirror, upstream, req, want := convertedMirror(t)
			if served {
				mirror.pushImage(t, "app:other", mustImage(t, upstream, "app:v1"))
			}
			r := newResolver(t, newClock(), resolve.Options{DigestMismatch: resolve.PinUpstream}, mirror, upstream)
			first, err := r.Resolve(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			waitCompared(t, r, req, first.Digest)
			o, _ := r.Cached(req)
			if o.Mismatch == nil || o.Mismatch.Cause != contract.CauseConversion {
				t.Fatalf("next admission: %+v; want a conversion mismatch", o)
			}
			if served {
				if o.Err != nil || o.Digest != want || !o.Mismatch.PinnedUpstream {
					t.Errorf("next admission: %+v; want the upstream's %s pinned", o, want)
				}
				return
			}
			if !errors.Is(o.Err, resolve.ErrDiverged) || o.Digest != "" {
				t.Errorf("next admission: %+v; want ErrDiverged and no digest", o)
			}
			t.Logf("error: %v", o.Err)
		})
	}
}

func mustImage(t *testing.T, tr *testRegistry, repoTag string) v1.Image {
	t.Helper()
	img, err := remote.Image(tr.ref(t, repoTag), tr.remoteOpts()...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// A burst of resolutions, and later ones of the same mirror digest after the cache expired,
// cost one comparison: one request for the upstream's tag. Without digestMismatch, none.
func TestDigestCompareOncePerDigest(t *testing.T) {
	t.Parallel()
	for _, policy := range []resolve.MismatchPolicy{resolve.PinMirror, ""} {
		t.Run("digestMismatch="+string(policy), func(t *testing.T) {
			t.Parallel()
			mirror, upstream, req, _ := convertedMirror(t)
			c := newClock()
			r := newResolver(t, c, resolve.Options{CacheTTL: time.Minute, DigestMismatch: policy}, mirror, upstream)
			for round := range 3 {
				var wg sync.WaitGroup
				for range 20 {
					wg.Go(func() {
						if _, err := r.Resolve(context.Background(), req); err != nil {
							t.Errorf("round %d: %v", round, err)
						}
					})
				}
				wg.Wait()
				if o, _ := r.Cached(req); policy != "" {
					waitCompared(t, r, req, o.Digest)
				}
				c.Advance(2 * time.Minute)
			}
			want := map[resolve.MismatchPolicy]int{resolve.PinMirror: 1}[policy]
			if n := upstream.count(http.MethodHead, "app", "v1") + upstream.count(http.MethodGet, "app", "v1"); n != want {
				t.Errorf("%d requests for the upstream's tag, want %d", n, want)
			}
		})
	}
}

// A reload that changes digestMismatch compares again at the next mirror resolution, rather
// than keep a verdict made for the other policy (here: a refusal that Mirror does not make).
func TestDigestMismatchReload(t *testing.T) {
	t.Parallel()
	mirror, upstream, req, _ := convertedMirror(t)
	c := newClock()
	opts := resolve.Options{CacheTTL: time.Minute, DigestMismatch: resolve.PinUpstream, Now: c.Now,
		Registries: map[string]resolve.Registry{mirror.host: {Insecure: true}, upstream.host: {Insecure: true}}}
	r := newResolver(t, c, opts)
	first, err := r.Resolve(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	waitCompared(t, r, req, first.Digest)
	if o, _ := r.Cached(req); !errors.Is(o.Err, resolve.ErrDiverged) {
		t.Fatalf("under Upstream: %+v; want ErrDiverged", o)
	}
	opts.DigestMismatch = resolve.PinMirror
	if err := r.Configure(opts); err != nil {
		t.Fatal(err)
	}
	c.Advance(2 * time.Minute)
	if _, err := r.Resolve(context.Background(), req); err != nil {
		t.Fatalf("after the reload: %v; want the mirror's digest", err)
	}
	waitCompared(t, r, req, first.Digest)
	if o, _ := r.Cached(req); o.Err != nil || o.Digest != first.Digest || o.Mismatch == nil {
		t.Errorf("after the reload: %+v; want the mirror's %s with a mismatch", o, first.Digest)
	}
}

// Comparisons are advisory: failing ones leave the breakers as they were, so an upstream that
// fails them (here with 500s, past BreakerFailures) is not left alone for fallbackToUpstream,
// and a mirror that keeps them waiting is not taken out of pinning.
func TestComparisonsLeaveBreakersAlone(t *testing.T) {
	t.Parallel()
	mirror, upstream, req, _ := convertedMirror(t)
	upstream.setFault(status(http.StatusInternalServerError))
	c := newClock()
	r := newResolver(t, c, resolve.Options{CacheTTL: time.Minute, DigestMismatch: resolve.PinMirror, BreakerFailures: 1}, mirror, upstream)
	for range 3 {
		if _, err := r.Resolve(context.Background(), req); err != nil {
			t.Fatal(err)
		}
		for end := time.Now().Add(10 * time.Second); resolve.Comparing(r) > 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatal("the comparison did not end within 10s")
			}
		}
		c.Advance(2 * time.Minute) // the next resolution asks the mirror, and compares again
	}
	if n := upstream.count(http.MethodHead, "app", "v1"); n != 3 {
		t.Errorf("%d comparisons reached the upstream, want 3 (a failed one is tried again)", n)
	}
	if g := circuitOpen(t, upstream.host); g != 0 {
		t.Errorf("pullgate_registry_circuit_open{registry=upstream} = %v, want 0", g)
	}
}
