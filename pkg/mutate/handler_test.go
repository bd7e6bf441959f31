package mutate_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/policy"
	"github.com/pullgate/pullgate/pkg/resolve"
)

// testRegistry is a real OCI registry on 127.0.0.1 acting as the mirror, with a hook to
// delay or fail manifest requests.
type testRegistry struct {
	host      string
	manifests atomic.Int64
	hang      atomic.Bool
	status    atomic.Int32 // non-zero: answer every request with it and a multi-line body
}

func newTestRegistry(t *testing.T) *testRegistry {
	t.Helper()
	r := &testRegistry{}
	released := make(chan struct{})
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if code := r.status.Load(); code != 0 {
			http.Error(w, "injected fault\r\nwith a second line", int(code))
			return
		}
		if strings.Contains(req.URL.Path, "/manifests/") {
			r.manifests.Add(1)
			if r.hang.Load() {
				select {
				case <-req.Context().Done():
				case <-released:
				}
				return
			}
		}
		inner.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(released) }) // runs first: hung requests end, so Close returns
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// push writes a random image at repo:tag and returns its digest.
func (r *testRegistry) push(t *testing.T, repoTag string) string {
	t.Helper()
	return pushImage(t, r.host, repoTag)
}

// pushImage writes a small random image to host/repoTag (plain HTTP) and returns its digest.
func pushImage(tb testing.TB, host, repoTag string) string {
	tb.Helper()
	ref, err := name.NewTag(host+"/"+repoTag, name.Insecure)
	if err != nil {
		tb.Fatal(err)
	}
	img, err := random.Image(256, 1)
	if err != nil {
		tb.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		tb.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		tb.Fatal(err)
	}
	return d.String()
}

type fixedPolicy struct{ c *policy.Compiled }

func (f fixedPolicy) Current() *policy.Compiled { return f.c }

// setup returns a handler whose policy mirrors docker.io to the test registry.
func setup(t *testing.T, extra string) (*mutate.Handler, *testRegistry) {
	t.Helper()
	return setupWith(t, extra, resolve.Options{})
}

// setupWith is setup with resolver options (the registry is filled in).
func setupWith(t *testing.T, extra string, opts resolve.Options) (*mutate.Handler, *testRegistry) {
	t.Helper()
	reg := newTestRegistry(t)
	doc := fmt.Sprintf(`apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors: [{registry: docker.io, mirror: %s/hub, insecure: true}]
imagePullSecrets: [mirror-pull]
%s`, reg.host, extra)
	pol, err := policy.Check([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	opts.Registries = map[string]resolve.Registry{reg.host: {Insecure: true}}
	res, err := resolve.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return mutate.NewHandler(mutate.Handler{Policy: fixedPolicy{pol}, Resolver: res, OwnNamespace: "pullgate"}), reg
}

func podRequest(t *testing.T, op admissionv1.Operation, pod *corev1.Pod) admission.Request {
	t.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "u1",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: "apps",
		Operation: op,
		Object:    runtime.RawExtension{Raw: raw},
	}}
}

func testPod(images ...string) *corev1.Pod {
	p := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}, ObjectMeta: metav1.ObjectMeta{Name: "p"}}
	for i, img := range images {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: img})
	}
	return p
}

// applied returns the pod after the response's patch, as the API server would store it.
func applied(t *testing.T, req admission.Request, resp admission.Response) *corev1.Pod {
	t.Helper()
	if err := resp.Complete(req); err != nil {
		t.Fatal(err)
	}
	out := req.Object.Raw
	if len(resp.Patch) > 0 {
		patch, err := jsonpatch.DecodePatch(resp.Patch)
		if err != nil {
			t.Fatal(err)
		}
		if out, err = patch.Apply(out); err != nil {
			t.Fatalf("patch does not apply: %v", err)
		}
	}
	var p corev1.Pod
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	return &p
}

func TestHandlerPinsAgainstRealRegistry(t *testing.T) {
	h, reg := setup(t, "")
	nginx := reg.push(t, "hub/library/nginx:1.27")
	redis := reg.push(t, "hub/bitnami/redis:7")
	req := podRequest(t, admissionv1.Create, testPod("nginx:1.27", "bitnami/redis:7", "nginx:1.27"))
	reg.manifests.Store(0)
	resp := h.Handle(context.Background(), req)
	if !resp.Allowed || len(resp.Warnings) != 0 {
		t.Fatalf("allowed=%v warnings=%v result=%v", resp.Allowed, resp.Warnings, resp.Result)
	}
	p := applied(t, req, resp)
	want := []string{
		reg.host + "/hub/library/nginx:1.27@" + nginx,
		reg.host + "/hub/bitnami/redis:7@" + redis,
		reg.host + "/hub/library/nginx:1.27@" + nginx,
	}
	for i, c := range p.Spec.Containers {
		if c.Image != want[i] || c.ImagePullPolicy != corev1.PullIfNotPresent {
			t.Errorf("container %d: %s %s, want %s IfNotPresent", i, c.Image, c.ImagePullPolicy, want[i])
		}
	}
	if len(p.Spec.ImagePullSecrets) != 1 || p.Spec.ImagePullSecrets[0].Name != "mirror-pull" {
		t.Errorf("pull secrets %v", p.Spec.ImagePullSecrets)
	}
	// Two distinct tags: two manifest requests, the duplicate image shares one.
	if n := reg.manifests.Load(); n != 2 {
		t.Errorf("%d manifest requests, want 2", n)
	}
}

func TestHandlerAuditAndDryRun(t *testing.T) {
	if err := mutate.RegisterMetrics(metrics.Registry); err != nil {
		t.Fatal(err)
	}
	h, reg := setup(t, "mode: Audit\n")
	events := &eventLog{}
	h.Events = events
	reg.push(t, "hub/library/nginx:1.27")
	auditRewrites := map[string]string{"action": "rewrite", "mode": "audit"}
	before := counter(t, "pullgate_mutations_total", auditRewrites)

	req := podRequest(t, admissionv1.Create, testPod("nginx:1.27"))
	resp := h.Handle(context.Background(), req)
	if !resp.Allowed || len(resp.Patch) != 0 {
		t.Fatalf("audit must admit unchanged: allowed=%v patch=%s", resp.Allowed, resp.Patch)
	}
	joined := strings.Join(resp.Warnings, "\n")
	for _, w := range []string{"would rewrite", "would pin", "would set imagePullPolicy", `would add imagePullSecret "mirror-pull"`} {
		if !strings.Contains(joined, w) {
			t.Errorf("missing warning %q in %q", w, joined)
		}
	}
	if resp.AuditAnnotations["mode"] != "audit" || !strings.Contains(changesAnnotation(resp.AuditAnnotations), "rewrite") {
		t.Errorf("audit annotations %v", resp.AuditAnnotations)
	}
	if got := counter(t, "pullgate_mutations_total", auditRewrites) - before; got != 1 {
		t.Errorf("audit rewrite counter moved by %v, want 1", got)
	}

	// The same request as a dry run is answered identically and leaves no trace in metrics.
	dry := true
	req.DryRun = &dry
	resp2 := h.Handle(context.Background(), req)
	if strings.Join(resp2.Warnings, "\n") != joined {
		t.Errorf("dry run answered differently: %v", resp2.Warnings)
	}
	if got := counter(t, "pullgate_mutations_total", auditRewrites) - before; got != 1 {
		t.Errorf("dry run moved the counter: %v", got)
	}
	if len(events.calls) != 1 || events.calls[0] != "apps/p: 4 changes" {
		t.Errorf("events %v, want one for the audit and none for the dry run", events.calls)
	}
}

// counter reads a counter from controller-runtime's registry, where pullgate registers its own.
func counter(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func TestHandlerDeadlineAndCancel(t *testing.T) {
	h, reg := setup(t, "resolve: {timeout: 300ms}\n")
	reg.hang.Store(true)
	req := podRequest(t, admissionv1.Create, testPod("nginx:1.27", "redis:7"))
	start := time.Now()
	resp := h.Handle(context.Background(), req)
	took := time.Since(start)
	// The acceptance bound: an admission never takes longer than the budget plus 100ms.
	if took > 400*time.Millisecond {
		t.Errorf("took %v with a 300ms budget", took)
	}
	if !resp.Allowed || len(resp.Warnings) != 2 || !strings.Contains(resp.Warnings[0], "could not pin") {
		t.Fatalf("hanging registry: allowed=%v warnings=%v", resp.Allowed, resp.Warnings)
	}
	// Rewritten to the mirror even though unpinned, and pull policy left alone.
	p := applied(t, req, resp)
	if c := p.Spec.Containers[0]; c.Image != reg.host+"/hub/library/nginx:1.27" || c.ImagePullPolicy != "" {
		t.Errorf("unpinned container: %s %q", c.Image, c.ImagePullPolicy)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start = time.Now()
	resp = h.Handle(ctx, podRequest(t, admissionv1.Create, testPod("busybox:1")))
	if time.Since(start) > 100*time.Millisecond || !resp.Allowed || len(resp.Warnings) != 1 {
		t.Errorf("cancelled context: took %v, allowed=%v, warnings=%v", time.Since(start), resp.Allowed, resp.Warnings)
	}
}

func TestHandlerDeny(t *testing.T) {
	h, _ := setup(t, "resolve: {onError: Deny}\n")
	resp := h.Handle(context.Background(), podRequest(t, admissionv1.Create, testPod("nginx:does-not-exist")))
	if resp.Allowed || !strings.Contains(resp.Result.Message, "onError: Deny") || !strings.Contains(resp.Result.Message, "nginx:does-not-exist") {
		t.Fatalf("want a denial naming the image and cause, got allowed=%v %v", resp.Allowed, resp.Result)
	}
}

func TestHandlerBadRequests(t *testing.T) {
	t.Parallel()
	h, _ := setup(t, "")
	good := podRequest(t, admissionv1.Create, testPod("nginx:1.27"))
	cases := []struct {
		name    string
		mod     func(r *admission.Request)
		allowed bool
		code    int32
	}{
		{"object null", func(r *admission.Request) { r.Object.Raw = []byte("null") }, false, 400},
		{"object missing", func(r *admission.Request) { r.Object.Raw = nil }, false, 400},
		{"object not json", func(r *admission.Request) { r.Object.Raw = []byte("{not json") }, false, 400},
		{"object wrong kind", func(r *admission.Request) { r.Object.Raw = []byte(`{"apiVersion":"v1","kind":"Secret"}`) }, false, 400},
		{"containers not a list", func(r *admission.Request) { r.Object.Raw = []byte(`{"kind":"Pod","spec":{"containers":"x"}}`) }, false, 400},
		{"update without oldObject", func(r *admission.Request) { r.Operation = admissionv1.Update }, false, 400},
		{"not pods", func(r *admission.Request) { r.Resource.Resource = "deployments"; r.Resource.Group = "apps" }, true, 200},
		{"delete", func(r *admission.Request) { r.Operation = admissionv1.Delete }, true, 200},
		{"status subresource", func(r *admission.Request) { r.SubResource = "status" }, true, 200},
		{"own namespace", func(r *admission.Request) { r.Namespace = "pullgate" }, true, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := good
			req.Object.Raw = append([]byte(nil), good.Object.Raw...)
			tc.mod(&req)
			resp := h.Handle(context.Background(), req)
			if resp.Allowed != tc.allowed || resp.Result.Code != tc.code || len(resp.Patch) != 0 {
				t.Errorf("allowed=%v code=%d patches=%d, want allowed=%v code=%d and no patch (%s)", resp.Allowed, resp.Result.Code, len(resp.Patch), tc.allowed, tc.code, resp.Result.Message)
			}
		})
	}
}

// TestHandlerExamplePod runs the example pod shipped for `make run` (init container, two
// containers, an image volume, three upstream registries) through the handler: every image field
// ends up on its mirror, pinned to the digest the mirror holds, with IfNotPresent.
func TestHandlerExamplePod(t *testing.T) {
	reg := newTestRegistry(t)
	want := map[string]string{ // image as written -> where it must end up
		"busybox:1.36":                     reg.host + "/hub/library/busybox:1.36@" + reg.push(t, "hub/library/busybox:1.36"),
		"nvcr.io/nvidia/pytorch:24.05-py3": reg.host + "/nvcr/nvidia/pytorch:24.05-py3@" + reg.push(t, "nvcr/nvidia/pytorch:24.05-py3"),
		"nginx":                            reg.host + "/hub/library/nginx:latest@" + reg.push(t, "hub/library/nginx:latest"),
		"ghcr.io/example/dataset:v3":       reg.host + "/ghcr/example/dataset:v3@" + reg.push(t, "ghcr/example/dataset:v3"),
	}
	pol, err := policy.Check([]byte(fmt.Sprintf(`apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors:
  - {registry: docker.io, mirror: %[1]s/hub, insecure: true}
  - {registry: nvcr.io, mirror: %[1]s/nvcr, insecure: true}
  - {registry: ghcr.io, mirror: %[1]s/ghcr, insecure: true}
`, reg.host)))
	if err != nil {
		t.Fatal(err)
	}
	res, err := resolve.New(resolve.Options{Registries: map[string]resolve.Registry{reg.host: {Insecure: true}}})
	if err != nil {
		t.Fatal(err)
	}
	h := mutate.NewHandler(mutate.Handler{Policy: fixedPolicy{pol}, Resolver: res})

	data, err := os.ReadFile(filepath.Join("..", "..", "examples", "pod.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := yaml.YAMLToJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	req := podRequest(t, admissionv1.Create, &corev1.Pod{})
	req.Object.Raw = raw
	resp := h.Handle(context.Background(), req)
	if len(resp.Warnings) != 0 {
		t.Fatalf("warnings: %q", resp.Warnings)
	}
	p := applied(t, req, resp)
	type field struct{ image, policy string }
	var got []field
	for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
		got = append(got, field{c.Image, string(c.ImagePullPolicy)})
	}
	for _, v := range p.Spec.Volumes {
		if v.Image != nil {
			got = append(got, field{v.Image.Reference, string(v.Image.PullPolicy)})
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d image fields after mutation, want %d: %+v", len(got), len(want), got)
	}
	for _, f := range got {
		found := false
		for _, w := range want {
			found = found || f.image == w
		}
		if !found || f.policy != string(corev1.PullIfNotPresent) {
			t.Errorf("image %s (pull policy %q) is not one of the pinned mirror references %v", f.image, f.policy, want)
		}
	}
}

// changesAnnotation returns the value of the content-named changes-<hash> audit annotation.
func changesAnnotation(a map[string]string) string {
	for k, v := range a {
		if strings.HasPrefix(k, "changes-") {
			return v
		}
	}
	return ""
}

func TestWarningsAreHeaderSafe(t *testing.T) {
	h, reg := setup(t, "")
	reg.status.Store(http.StatusServiceUnavailable)
	// The registry's error body (untrusted, multi-line) reaches the warning text; the API
	// server drops warnings that are not valid header values, so the client would see nothing.
	resp := h.Handle(context.Background(), podRequest(t, admissionv1.Create, testPod("nginx:1")))
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "could not pin") {
		t.Fatalf("warnings %q", resp.Warnings)
	}
	for _, w := range resp.Warnings {
		for _, r := range w {
			if r < 0x20 || r == 0x7f {
				t.Errorf("control character %q in warning %q", r, w)
			}
		}
	}
}

// TestHandlerStaleIfError: a hanging registry with an expired cache entry still pins the pod,
// to the last known digest, with a warning, inside the budget. The resolver gives up just
// before the handler does, so its stale answer is not lost to the handler's own deadline.
func TestHandlerStaleIfError(t *testing.T) {
	h, reg := setupWith(t, "resolve: {timeout: 300ms}\n", resolve.Options{CacheTTL: time.Nanosecond, MaxStale: time.Hour})
	digest := reg.push(t, "hub/library/nginx:1.27")
	req := podRequest(t, admissionv1.Create, testPod("nginx:1.27"))
	if p := applied(t, req, h.Handle(context.Background(), req)); !strings.HasSuffix(p.Spec.Containers[0].Image, digest) {
		t.Fatalf("healthy registry: %s", p.Spec.Containers[0].Image)
	}
	reg.hang.Store(true)
	for i := 0; i < 5; i++ { // the race this guards against was timing-dependent
		start := time.Now()
		resp := h.Handle(context.Background(), req)
		if took := time.Since(start); took > 400*time.Millisecond {
			t.Errorf("took %v with a 300ms budget", took)
		}
		p := applied(t, req, resp)
		if !strings.HasSuffix(p.Spec.Containers[0].Image, digest) || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "last known digest") {
			t.Fatalf("try %d: image %s warnings %q", i, p.Spec.Containers[0].Image, resp.Warnings)
		}
	}
}

// eventLog records what the handler reports for Events.
type eventLog struct{ calls []string }

func (e *eventLog) WouldChange(namespace, pod string, changes []mutate.Change) {
	e.calls = append(e.calls, fmt.Sprintf("%s/%s: %d changes", namespace, pod, len(changes)))
}

// TestHandlerNoStale: maxStale: 0 means a failing registry is never papered over.
func TestHandlerNoStale(t *testing.T) {
	h, reg := setupWith(t, "resolve: {timeout: 300ms}\n", resolve.Options{CacheTTL: time.Nanosecond})
	reg.push(t, "hub/library/nginx:1.27")
	req := podRequest(t, admissionv1.Create, testPod("nginx:1.27"))
	if resp := h.Handle(context.Background(), req); len(resp.Warnings) != 0 {
		t.Fatalf("healthy registry: %v", resp.Warnings)
	}
	reg.status.Store(http.StatusInternalServerError)
	resp := h.Handle(context.Background(), req)
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "could not pin") {
		t.Fatalf("warnings %q, want the registry failure", resp.Warnings)
	}
}

// countingResolver is the real resolver, counting the requests that reach Resolve.
type countingResolver struct {
	*resolve.Resolver
	resolves atomic.Int64
}

func (c *countingResolver) Resolve(ctx context.Context, req contract.ResolveRequest) (contract.Resolution, error) {
	c.resolves.Add(1)
	return c.Resolver.Resolve(ctx, req)
}

// Images the cache already knows are answered before any resolution starts; only the others
// reach Resolve, and the budget still bounds them.
func TestHandlerAsksTheCacheFirst(t *testing.T) {
	h, reg := setup(t, "resolve: {timeout: 300ms}\n")
	counting := &countingResolver{Resolver: h.Resolver.(*resolve.Resolver)}
	h.Resolver = counting
	nginx := reg.push(t, "hub/library/nginx:1.27")
	redis := reg.push(t, "hub/library/redis:7")

	resp := h.Handle(context.Background(), podRequest(t, admissionv1.Create, testPod("nginx:1.27", "redis:7")))
	if n := counting.resolves.Load(); n != 2 || !resp.Allowed || len(resp.Warnings) != 0 {
		t.Fatalf("cold pod: %d resolves, allowed=%v, warnings %v; want 2, allowed, none", n, resp.Allowed, resp.Warnings)
	}

	reg.hang.Store(true)
	req := podRequest(t, admissionv1.Create, testPod("nginx:1.27", "redis:7", "busybox:1"))
	resp = h.Handle(context.Background(), req)
	if n := counting.resolves.Load(); n != 3 {
		t.Errorf("%d resolves in all, want 3: the two cached images must not reach Resolve", n)
	}
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "busybox") {
		t.Errorf("warnings %v, want one, for busybox (its registry hangs)", resp.Warnings)
	}
	p := applied(t, req, resp)
	for i, want := range []string{reg.host + "/hub/library/nginx:1.27@" + nginx, reg.host + "/hub/library/redis:7@" + redis} {
		if got := p.Spec.Containers[i].Image; got != want {
			t.Errorf("container %d: %s, want %s", i, got, want)
		}
	}
}
