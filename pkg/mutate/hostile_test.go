package mutate_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/policy"
	"github.com/pullgate/pullgate/pkg/resolve"
)

// hostileBound is a hang detector, far above what any of these requests needs (the resolve
// budget is 2s): a request still running after it is a bug, whatever it would have answered.
const hostileBound = 5 * time.Second

// handleWithin runs Handle under the hang detector and checks what every answer must satisfy:
// warnings are valid header values, and a patch only comes with an allowed response.
func handleWithin(t *testing.T, h *mutate.Handler, req admission.Request) admission.Response {
	t.Helper()
	done := make(chan admission.Response, 1)
	start := time.Now()
	go func() { done <- h.Handle(context.Background(), req) }()
	var resp admission.Response
	select {
	case resp = <-done:
	case <-time.After(hostileBound):
		t.Fatalf("Handle still running after %v", hostileBound)
	}
	t.Logf("answered in %v: allowed=%v patch=%d bytes warnings=%d", time.Since(start).Round(time.Millisecond), resp.Allowed, len(resp.Patch), len(resp.Warnings))
	for _, w := range resp.Warnings {
		if strings.ContainsFunc(w, func(r rune) bool { return r < 0x20 || r == 0x7f }) || len(w) > 512 {
			t.Errorf("warning is not a valid, bounded header value: %q", w)
		}
	}
	if !resp.Allowed && len(resp.Patch) > 0 {
		t.Errorf("denied with a patch")
	}
	return resp
}

// rawRequest is podRequest for an object given as raw bytes.
func rawRequest(op admissionv1.Operation, object []byte) admission.Request {
	req := podRequest(&testing.T{}, op, testPod())
	req.Object.Raw = object
	return req
}

// peakRegistry is a real in-memory registry that records how many client connections are
// open at once: what a burst of lookups costs the mirror, and the webhook in TLS handshakes.
type peakRegistry struct {
	host      string
	open      atomic.Int64
	peak      atomic.Int64
	manifests atomic.Int64
}

func newPeakRegistry(t *testing.T) *peakRegistry {
	t.Helper()
	r := &peakRegistry{}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.Contains(req.URL.Path, "/manifests/") && req.Method != http.MethodPut {
			r.manifests.Add(1)
		}
		inner.ServeHTTP(w, req)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			n := r.open.Add(1)
			for p := r.peak.Load(); n > p; p = r.peak.Load() {
				if r.peak.CompareAndSwap(p, n) {
					break
				}
			}
		case http.StateClosed, http.StateHijacked:
			r.open.Add(-1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// TestHostileManyContainers: a pod with 1,000 containers, 990 of them distinct tags the mirror
// does not have. The admission stays within its resolve budget, runs at most a handful of
// registry lookups at once (one per tag at once would be a thousand connections from one pod),
// still pins the image the mirror has, summarises its warnings, and its patch applies.
func TestHostileManyContainers(t *testing.T) {
	reg := newPeakRegistry(t)
	digest := pushImage(t, reg.host, "hub/library/nginx:1.27")
	const budget = time.Second
	pol, err := policy.Check([]byte(fmt.Sprintf(`apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors: [{registry: docker.io, mirror: %s/hub, insecure: true}]
resolve: {timeout: %s}
`, reg.host, budget)))
	if err != nil {
		t.Fatal(err)
	}
	res, err := resolve.New(resolve.Options{Registries: map[string]resolve.Registry{reg.host: {Insecure: true}}})
	if err != nil {
		t.Fatal(err)
	}
	h := mutate.NewHandler(mutate.Handler{Policy: fixedPolicy{pol}, Resolver: res})

	images := make([]string, 0, 1000)
	for range 10 {
		images = append(images, "nginx:1.27")
	}
	for i := range 990 {
		images = append(images, fmt.Sprintf("nginx:missing-%d", i))
	}
	req := podRequest(t, admissionv1.Create, testPod(images...))
	reg.peak.Store(reg.open.Load()) // the push's idle connections are not the admission's
	before := reg.open.Load()
	start := time.Now()
	resp := handleWithin(t, h, req)
	if took := time.Since(start); took > budget+time.Second {
		t.Errorf("took %v with a %v resolve budget", took, budget)
	}
	if !resp.Allowed {
		t.Fatalf("denied: %v", resp.Result)
	}
	// At most 16 lookups at once, each with up to two connections (go-containerregistry pings a
	// plain-HTTP registry over https and http at the same time), plus connections the server
	// has not yet seen close: 64 is a generous ceiling. One goroutine per tag opened ~1,800.
	if n := reg.peak.Load() - before; n > 64 {
		t.Errorf("one admission opened %d connections to the mirror at once, want at most 64", n)
	}
	p := applied(t, req, resp)
	for i, c := range p.Spec.Containers {
		if !strings.HasPrefix(c.Image, reg.host+"/hub/library/nginx:") {
			t.Fatalf("container %d not moved to the mirror: %s", i, c.Image)
		}
		if i < 10 && c.Image != reg.host+"/hub/library/nginx:1.27@"+digest {
			t.Errorf("container %d: %s, want pinned to %s", i, c.Image, digest)
		}
	}
	if len(resp.Warnings) > 20 {
		t.Errorf("%d warnings; the API server caps them, so they must be summarised", len(resp.Warnings))
	}
	for k, v := range resp.AuditAnnotations {
		if len(v) > 4096 {
			t.Errorf("audit annotation %s is %d bytes", k, len(v))
		}
	}
	t.Logf("%d manifest requests reached the mirror over at most %d connections at once", reg.manifests.Load(), reg.peak.Load()-before)
}

func TestHostileDuplicateContainerNames(t *testing.T) {
	t.Parallel()
	h, reg := setup(t, "resolve: {enabled: false}\n")
	pod := testPod("nginx:1", "nginx:2", "busybox")
	for i := range pod.Spec.Containers {
		pod.Spec.Containers[i].Name = "same"
	}
	pod.Spec.InitContainers = []corev1.Container{{Name: "same", Image: "nginx:3"}}
	req := podRequest(t, admissionv1.Create, pod)
	p := applied(t, req, handleWithin(t, h, req))
	for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
		if !strings.HasPrefix(c.Image, reg.host+"/hub/library/") {
			t.Errorf("not rewritten: %s", c.Image)
		}
	}

	// On UPDATE, containers are matched by index and name; duplicate names must neither
	// panic nor touch an image that did not change.
	old := testPod("nginx:1", "nginx:2", "busybox")
	for i := range old.Spec.Containers {
		old.Spec.Containers[i].Name = "same"
	}
	upd := podRequest(t, admissionv1.Update, pod)
	oldRaw, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	upd.OldObject.Raw = oldRaw
	pod.Spec.Containers[1].Image = "nginx:9"
	if upd.Object.Raw, err = json.Marshal(pod); err != nil {
		t.Fatal(err)
	}
	p = applied(t, upd, handleWithin(t, h, upd))
	want := []string{"nginx:1", reg.host + "/hub/library/nginx:9", "busybox"}
	for i, c := range p.Spec.Containers {
		if c.Image != want[i] {
			t.Errorf("UPDATE container %d: %s, want %s", i, c.Image, want[i])
		}
	}
}

func TestHostileImageStrings(t *testing.T) {
	t.Parallel()
	h, _ := setup(t, "resolve: {enabled: false}\n")
	long := "registry.example.com/" + strings.Repeat("a", 4096-len("registry.example.com/")-4) + ":tag"
	cases := []struct {
		name  string
		image string
	}{
		{"4096 characters", long},
		{"4096 characters of one name", strings.Repeat("n", 4096)},
		{"NUL byte", "nginx\x00:1.27"},
		{"NUL bytes only", "\x00\x00\x00"},
		{"control characters and newline", "nginx:1\r\nX-Injected: yes"},
		{"unicode lookalike", "ngіnx:1.27"}, // Cyrillic i
		{"empty", ""},
		{"only a digest", "@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := podRequest(t, admissionv1.Create, testPod(tc.image))
			resp := handleWithin(t, h, req)
			if !resp.Allowed {
				t.Fatalf("an invalid image is left alone, not denied: %v", resp.Result)
			}
			if got := applied(t, req, resp).Spec.Containers[0].Image; got != tc.image {
				t.Errorf("invalid image changed to %q", got)
			}
			if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "not a valid image reference") {
				t.Errorf("want one warning naming the invalid reference, got %q", resp.Warnings)
			}
		})
	}
}

func TestHostileRawObjects(t *testing.T) {
	t.Parallel()
	h, reg := setup(t, "resolve: {enabled: false}\n")
	pod := func(spec string) []byte {
		return []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":` + spec + `}`)
	}
	deep := pod(`{"containers":[{"name":"c","image":"nginx"}],"x":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`)
	// Bytes that are not UTF-8, in the image itself and in a field pullgate does not read.
	nonUTF8 := pod("{\"containers\":[{\"name\":\"c\",\"image\":\"ngin\xff\xfex:1\"},{\"name\":\"d\",\"image\":\"nginx:1\",\"x\":\"\xc3\x28\"}]}")
	big := pod(`{"containers":[{"name":"c","image":"nginx"}],"x":"` + strings.Repeat("a", 6<<20) + `"}`)
	cases := []struct {
		name    string
		op      admissionv1.Operation
		object  []byte
		allowed bool
		code    int32
	}{
		{"100k nested arrays in an unknown field", admissionv1.Create, deep, false, 400},
		{"non-UTF-8 bytes", admissionv1.Create, nonUTF8, true, 200},
		{"6 MB object", admissionv1.Create, big, true, 200},
		{"object null", admissionv1.Create, []byte("null"), false, 400},
		{"object is a list", admissionv1.Create, []byte(`[{"kind":"Pod"}]`), false, 400},
		{"object of another kind", admissionv1.Create, []byte(`{"apiVersion":"apps/v1","kind":"Deployment","spec":{"template":{"spec":{"containers":[{"name":"c","image":"nginx"}]}}}}`), false, 400},
		{"update without oldObject", admissionv1.Update, pod(`{"containers":[{"name":"c","image":"nginx"}]}`), false, 400},
		{"image of the wrong type", admissionv1.Create, pod(`{"containers":[{"name":"c","image":{"$ne":""}}]}`), false, 400},
		{"1000 image volumes", admissionv1.Create, pod(`{"containers":[{"name":"c","image":"nginx"}],"volumes":[` + strings.TrimSuffix(strings.Repeat(`{"name":"v","image":{"reference":"busybox"}},`, 1000), ",") + `]}`), true, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := rawRequest(tc.op, tc.object)
			resp := handleWithin(t, h, req)
			if resp.Allowed != tc.allowed || resp.Result.Code != tc.code {
				t.Fatalf("allowed=%v code=%d (%s), want allowed=%v code=%d", resp.Allowed, resp.Result.Code, resp.Result.Message, tc.allowed, tc.code)
			}
			if !resp.Allowed {
				if len(resp.Result.Message) > 1024 {
					t.Errorf("error message is %d bytes; it should say what is wrong, not echo the input", len(resp.Result.Message))
				}
				return
			}
			p := applied(t, req, resp)
			for _, c := range p.Spec.Containers {
				if c.Image == "nginx:1" || c.Image == "nginx" {
					t.Errorf("valid image left on upstream: %s", c.Image)
				}
				if strings.HasPrefix(c.Image, "ngin") && c.Image != "nginx:1" && !bytes.Equal([]byte(c.Image), []byte("ngin\uFFFD\uFFFDx:1")) {
					t.Errorf("invalid image changed: %q", c.Image)
				}
			}
			for _, v := range p.Spec.Volumes {
				if v.Image != nil && v.Image.Reference != reg.host+"/hub/library/busybox" {
					t.Errorf("image volume not rewritten: %s", v.Image.Reference)
				}
			}
		})
	}
}

// TestHostileAnnotationsCannotChooseSecrets: only the policy decides which pull secrets are
// added and whether a pod is skipped. Annotations and labels that look like pullgate settings,
// the opt-out annotation while the policy forbids opting out, and the namespace mode label set
// on the pod instead of the namespace change nothing.
func TestHostileAnnotationsCannotChooseSecrets(t *testing.T) {
	t.Parallel()
	h, reg := setup(t, "resolve: {enabled: false}\n")
	pod := testPod("nginx:1")
	pod.Annotations = map[string]string{
		mutate.SkipAnnotation:                 "true",
		"pullgate.dev/imagePullSecrets":       "stolen-robot",
		"pullgate.dev/mode":                   "audit",
		"pullgate.dev/rule":                   "airgapped",
		"pullgate.dev/exclude":                "true",
		"kubernetes.io/config.source":         "file",
		"admission.pullgate.dev/changes":      "none",
		"pullgate.dev/imagePullSecrets.extra": "[{\"name\":\"stolen\"}]",
	}
	pod.Labels = map[string]string{"pullgate.dev/mode": "audit", "pullgate.dev/skip": "true"}
	pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "own"}}
	req := podRequest(t, admissionv1.Create, pod)
	resp := handleWithin(t, h, req)
	p := applied(t, req, resp)
	var secrets []string
	for _, s := range p.Spec.ImagePullSecrets {
		secrets = append(secrets, s.Name)
	}
	if strings.Join(secrets, ",") != "own,mirror-pull" {
		t.Errorf("pull secrets %v, want the pod's own followed by the policy's: own,mirror-pull", secrets)
	}
	if p.Spec.Containers[0].Image != reg.host+"/hub/library/nginx:1" {
		t.Errorf("pod escaped the policy: %s", p.Spec.Containers[0].Image)
	}
	if resp.AuditAnnotations["mode"] != "enforce" {
		t.Errorf("mode %q: a pod label must not pick the mode", resp.AuditAnnotations["mode"])
	}
}
