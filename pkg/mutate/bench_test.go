package mutate_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pullgate/pullgate/internal/podfixture"
	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/policy"
	"github.com/pullgate/pullgate/pkg/resolve"
)

// go test -run '^$' -bench . -benchmem ./pkg/mutate/
//
// The pods are shaped like what the API server sends after defaulting (owner reference,
// resources, probes, the projected service-account volume, default tolerations), because
// decoding the pod is a large part of the cost and an empty pod would hide it.

// BenchmarkPlanApply is the pure core: decode the pod, plan every image, apply digests that
// are already known. No resolver, no network.
func BenchmarkPlanApply(b *testing.B) {
	pol := benchPolicy(b, false, "mirror.example.com/hub")
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("containers-%d", n), func(b *testing.B) {
			in := mutate.Input{
				Operation: admissionv1.Create,
				Namespace: "apps",
				Object:    benchPodJSON(b, n, "app"),
			}
			p, err := mutate.NewPlan(pol, in)
			if err != nil {
				b.Fatal(err)
			}
			outcomes := map[string]contract.Outcome{}
			for i, r := range p.Requests() {
				outcomes[r.Ref.String()] = contract.Outcome{Resolution: contract.Resolution{Digest: fmt.Sprintf("sha256:%064x", i+1)}}
			}
			if len(outcomes) != n {
				b.Fatalf("%d requests, want %d", len(outcomes), n)
			}
			if res := p.Apply(outcomes); len(res.Patch) != n+2 || len(res.Warnings) != 0 {
				b.Fatalf("patch %v warnings %v", res.Patch, res.Warnings)
			}
			b.ReportAllocs()
			for b.Loop() {
				p, err := mutate.NewPlan(pol, in)
				if err != nil {
					b.Fatal(err)
				}
				_ = p.Apply(outcomes)
			}
		})
	}
}

// BenchmarkHandle is the whole admission handler with a real resolver, resolve.New, whose cache
// is warm: the registry (go-containerregistry's, on 127.0.0.1) is asked nothing during the
// loop, which requests/op reports. warm-2-mirrors lists a second mirror for docker.io (ordered
// mirrors): the first serves, so the cost must be warm's.
func BenchmarkHandle(b *testing.B) {
	reg, second := newBenchRegistry(b), newBenchRegistry(b)
	for _, setup := range []struct {
		name    string
		mirrors []string
	}{{"warm", []string{reg.host + "/hub"}}, {"warm-2-mirrors", []string{reg.host + "/hub", second.host + "/hub"}}} {
		pol := benchPolicy(b, true, setup.mirrors...)
		res, err := resolve.New(resolve.Options{Registries: map[string]resolve.Registry{reg.host: {Insecure: true}, second.host: {Insecure: true}}})
		if err != nil {
			b.Fatal(err)
		}
		h := mutate.NewHandler(mutate.Handler{Policy: benchPolicySource{pol}, Resolver: res, OwnNamespace: "pullgate"})
		for _, n := range []int{1, 10} {
			b.Run(fmt.Sprintf("%s/containers-%d", setup.name, n), func(b *testing.B) {
				repo := fmt.Sprintf("bench%d", n)
				for i := range n {
					reg.push(b, fmt.Sprintf("hub/library/%s:v%d", repo, i))
				}
				req := benchRequest(b, benchPodJSON(b, n, repo))
				ctx := context.Background()
				// The first call fills the cache and checks that every image gets pinned (n ops,
				// plus the pull secret and OriginalAnnotation).
				resp := h.Handle(ctx, req)
				var ops []map[string]any
				if err := json.Unmarshal(resp.Patch, &ops); err != nil || !resp.Allowed || len(resp.Warnings) != 0 || len(ops) != n+2 {
					b.Fatalf("allowed=%v warnings=%v patch=%s (%v)", resp.Allowed, resp.Warnings, resp.Patch, err)
				}
				before := reg.manifests.Load()
				b.ReportAllocs()
				for b.Loop() {
					_ = h.Handle(ctx, req)
				}
				b.ReportMetric(float64(reg.manifests.Load()-before)/float64(b.N), "requests/op")
			})
		}
	}
}

type benchPolicySource struct{ c *policy.Compiled }

func (s benchPolicySource) Current() *policy.Compiled { return s.c }

func benchPolicy(b *testing.B, insecure bool, mirrors ...string) *policy.Compiled {
	b.Helper()
	var entries []string
	for _, m := range mirrors {
		entries = append(entries, fmt.Sprintf("{registry: docker.io, mirror: %q, insecure: %t}", m, insecure))
	}
	pol, err := policy.Check(fmt.Appendf(nil, `apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors: [%s]
imagePullSecrets: [mirror-pull]
exclude: {namespaces: [kube-system], images: ["registry.k8s.io/pause:*"]}
`, strings.Join(entries, ", ")))
	if err != nil {
		b.Fatal(err)
	}
	return pol
}

// benchRegistry is go-containerregistry's in-memory registry on 127.0.0.1 with a manifest
// request counter.
type benchRegistry struct {
	host      string
	manifests atomic.Int64
}

func newBenchRegistry(b *testing.B) *benchRegistry {
	b.Helper()
	r := &benchRegistry{}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.Contains(req.URL.Path, "/manifests/") {
			r.manifests.Add(1)
		}
		inner.ServeHTTP(w, req)
	}))
	b.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

func (r *benchRegistry) push(b *testing.B, repoTag string) {
	b.Helper()
	pushImage(b, r.host, repoTag)
}

func benchRequest(b *testing.B, raw []byte) admission.Request {
	b.Helper()
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "bench",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: "apps",
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: raw},
	}}
}

// benchPodJSON is a defaulted Deployment pod with n containers on docker.io/library/repo:v<i>.
func benchPodJSON(b *testing.B, n int, repo string) []byte {
	b.Helper()
	images := make([]string, n)
	for i := range images {
		images[i] = fmt.Sprintf("%s:v%d", repo, i)
	}
	raw, err := json.Marshal(podfixture.Defaulted(images))
	if err != nil {
		b.Fatal(err)
	}
	return raw
}
