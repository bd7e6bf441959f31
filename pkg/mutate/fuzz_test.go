package mutate

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/name"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/policy"
)

// mirrorsPolicy mirrors several upstreams, one per way a mirror can be spelled (path prefix, port,
// deep prefix, no prefix).
const mirrorsPolicy = `apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors:
  - {registry: docker.io, mirror: mirror.example.com/hub}
  - {registry: quay.io, mirror: "mirror.example.com:8443/quay"}
  - {registry: "localhost:5000", mirror: mirror2.example.com}
  - {registry: "[::1]:5000", mirror: mirror.example.com/v6/deep}
imagePullSecrets: [mirror-pull]
`

// fuzzPolicy is mirrorsPolicy with some images excluded.
const fuzzPolicy = mirrorsPolicy + `exclude:
  images: ["registry.k8s.io/*", "docker.io/excluded/*"]
`

// fuzzMirrors is fuzzPolicy's mirrors as the oracle sees them: canonical upstream -> host, prefix.
var fuzzMirrors = map[string][2]string{
	"docker.io":      {"mirror.example.com", "hub"},
	"quay.io":        {"mirror.example.com:8443", "quay"},
	"localhost:5000": {"mirror2.example.com", ""},
	"[::1]:5000":     {"mirror.example.com", "v6/deep"},
}

func fuzzCompile(t testing.TB, doc string) *policy.Compiled {
	t.Helper()
	c, err := policy.Check([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fuzzPod puts image into one image field of an otherwise minimal pod; where picks the field.
func fuzzPod(t *testing.T, image string, where uint8) []byte {
	t.Helper()
	c := map[string]any{"name": "c", "image": image}
	spec := map[string]any{"containers": []any{map[string]any{"name": "main", "image": "registry.k8s.io/pause:3.10"}}}
	switch where % 4 {
	case 0:
		spec["containers"] = []any{c}
	case 1:
		spec["initContainers"] = []any{c}
	case 2:
		spec["ephemeralContainers"] = []any{c}
	case 3:
		spec["volumes"] = []any{map[string]any{"name": "v", "emptyDir": map[string]any{}}, map[string]any{"name": "img", "image": map[string]any{"reference": image}}}
	}
	raw, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": "p"}, "spec": spec})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// fieldImage reads the fuzzed image field back from a pod.
func fieldImage(p *corev1.Pod, where uint8) string {
	switch where % 4 {
	case 0:
		return p.Spec.Containers[0].Image
	case 1:
		return p.Spec.InitContainers[0].Image
	case 2:
		return p.Spec.EphemeralContainers[0].Image
	default:
		return p.Spec.Volumes[1].Image.Reference
	}
}

// fuzzOutcomes answers every request of a plan: a digest derived from the reference, or, with
// fail, nothing at all (every pin then fails, onError: Keep).
func fuzzOutcomes(p *Plan, fail bool) map[string]contract.Outcome {
	out := map[string]contract.Outcome{}
	if fail {
		return out
	}
	for _, r := range p.Requests() {
		out[r.Ref.String()] = contract.Outcome{Resolution: contract.Resolution{Digest: digestOf(r.Ref.String())}}
	}
	return out
}

// applyPatch applies a JSON patch the way the API server does and decodes the result. The
// result must decode as a Pod whenever doc did: pullgate reads only a few fields, so it may
// patch an object the API server would never send (say, a number out of range elsewhere).
func applyPatch(t *testing.T, doc []byte, ops any) ([]byte, *corev1.Pod) {
	t.Helper()
	raw, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	patch, err := jsonpatch.DecodePatch(raw)
	if err != nil {
		t.Fatalf("patch %s does not decode: %v", raw, err)
	}
	out, err := patch.Apply(doc)
	if err != nil {
		t.Fatalf("patch %s does not apply to %s: %v", raw, doc, err)
	}
	if !json.Valid(out) {
		t.Fatalf("patched object is not JSON: %s", out)
	}
	var p corev1.Pod
	if err := json.Unmarshal(out, &p); err != nil {
		if json.Unmarshal(doc, &corev1.Pod{}) != nil {
			return out, &p // not a Pod before the patch either
		}
		t.Fatalf("patched pod %s does not decode: %v", out, err)
	}
	return out, &p
}

// explicitTag is the tag an author wrote in s (a valid reference), "" when none.
func explicitTag(s string) string {
	if i := strings.LastIndex(s, "@"); i >= 0 {
		s = s[:i]
	}
	if i := strings.LastIndex(s, ":"); i > strings.LastIndex(s, "/") {
		return s[i+1:]
	}
	return ""
}

func headerSafe(t *testing.T, what string, ss []string) {
	t.Helper()
	for _, s := range ss {
		for _, r := range s {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("%s %q carries control character %q", what, s, r)
			}
		}
		if len(s) > maxWarningLength {
			t.Fatalf("%s is %d bytes, more than %d", what, len(s), maxWarningLength)
		}
	}
}

// FuzzImageRewrite drives the pure core with arbitrary image strings in every kind of image
// field. Properties: the patch applies and the pod still decodes; an invalid or excluded
// reference is never changed; anything else still parses, lands on the mirror's prefix plus
// the original repository (or stays where it was), keeps its tag and digest, is pinned when
// resolution succeeds, and planning the result again changes nothing.
func FuzzImageRewrite(f *testing.F) {
	for _, s := range []string{
		"nginx", "nginx:1.27", "library/nginx:1.27", "bitnami/redis:7", "docker.io/nginx",
		"index.docker.io/library/nginx:1.27", "registry-1.docker.io/library/nginx:1.27",
		"quay.io/prometheus/node-exporter:v1.8.0", "localhost:5000/app:dev", "[::1]:5000/app:dev",
		"registry.k8s.io/pause:3.10", "docker.io/excluded/app:1", "ghcr.io/a/b/c:1",
		"nginx@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		"nginx:1.27@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		"mirror.example.com/hub/library/nginx:1.27", "mirror.example.com/hubx/library/nginx:1.27",
		"mirror.example.com:8443/quay/a/b:1", "mirror2.example.com/anything:1",
		"reg:5000/img@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		"NGINX:1.27", "nginx::", "", " nginx", "nginx\x00:1", "\xff\xfe", strings.Repeat("a", 4096),
		"a/" + strings.Repeat("b", 1020), "nginx:" + strings.Repeat("t", 128),
	} {
		for where := range uint8(4) {
			f.Add(s, where, false)
		}
		f.Add(s, uint8(0), true)
	}
	pol := fuzzCompile(f, fuzzPolicy)
	f.Fuzz(func(t *testing.T, image string, where uint8, fail bool) {
		doc := fuzzPod(t, image, where)
		var before corev1.Pod
		if err := json.Unmarshal(doc, &before); err != nil {
			t.Fatal(err)
		}
		orig := fieldImage(&before, where) // after JSON: invalid UTF-8 became U+FFFD
		in := Input{Operation: admissionv1.Create, Namespace: "apps", Object: doc}
		plan, err := NewPlan(pol, in)
		if err != nil {
			t.Fatalf("NewPlan: %v", err)
		}
		res := plan.Apply(fuzzOutcomes(plan, fail))
		if res.Deny != "" {
			t.Fatalf("onError: Keep denied: %s", res.Deny)
		}
		headerSafe(t, "warning", res.Warnings)
		patched, after := applyPatch(t, doc, res.Patch)
		got := fieldImage(after, where)

		ref, perr := name.ParseReference(orig)
		if perr != nil || len(orig) > maxRefLength {
			if got != orig {
				t.Fatalf("invalid reference %q changed to %q", orig, got)
			}
			return
		}
		reg := policy.CanonicalRegistry(ref.Context().RegistryStr())
		repo := ref.Context().RepositoryStr()
		if reg == "registry.k8s.io" || (reg == "docker.io" && strings.HasPrefix(repo, "excluded/")) {
			if got != orig {
				t.Fatalf("excluded reference %q changed to %q", orig, got)
			}
			return
		}
		out, err := name.ParseReference(got)
		if err != nil {
			t.Fatalf("%q became %q, which does not parse: %v", orig, got, err)
		}
		wantRepo := ref.Context().Name()
		if m, ok := fuzzMirrors[reg]; ok && !onFuzzMirror(ref.Context().RegistryStr(), repo) {
			wantRepo = m[0] + "/" + strings.TrimPrefix(m[1]+"/"+repo, "/")
			// The prefix may push the repository past its 255 characters: no valid rewrite
			// exists, so the image must stay as it is, with a warning.
			if _, err := name.NewRepository(wantRepo); err != nil {
				if got != orig || len(res.Warnings) == 0 {
					t.Fatalf("%q has no valid mirror reference (%v), yet became %q with warnings %q", orig, err, got, res.Warnings)
				}
				return
			}
		}
		if out.Context().Name() != wantRepo {
			t.Fatalf("%q became %q: repository %q, want %q", orig, got, out.Context().Name(), wantRepo)
		}
		switch d, pinned := out.(name.Digest); {
		case !pinned && (fail || len(plan.Requests()) == 0) && !strings.Contains(orig, "@"):
			// Unpinned: resolution failed, or nothing to resolve. Fine.
		case !pinned:
			t.Fatalf("%q became %q: not pinned", orig, got)
		case strings.Contains(orig, "@") && d.DigestStr() != orig[strings.LastIndex(orig, "@")+1:]:
			t.Fatalf("%q became %q: digest changed", orig, got)
		}
		wantTag := explicitTag(orig)
		if wantTag == "" && strings.Contains(got, "@") && !strings.Contains(orig, "@") {
			wantTag = name.DefaultTag // pinned: the implicit latest is written out
		}
		if explicitTag(got) != wantTag {
			t.Fatalf("%q became %q: tag %q, want %q", orig, got, explicitTag(got), wantTag)
		}

		// Idempotent: the output, planned again with the same registry behaviour, is final.
		again, err := NewPlan(pol, Input{Operation: admissionv1.Create, Namespace: "apps", Object: patched})
		if err != nil {
			t.Fatalf("NewPlan on own output: %v", err)
		}
		if res2 := again.Apply(fuzzOutcomes(again, fail)); len(res2.Patch) != 0 {
			ops, _ := json.Marshal(res2.Patch)
			t.Fatalf("%q became %q, and planning that again patches %s", orig, got, ops)
		}
	})
}

// onFuzzMirror is the oracle for "already on a mirror of fuzzPolicy".
func onFuzzMirror(host, repo string) bool {
	for _, m := range fuzzMirrors {
		if host == m[0] && (m[1] == "" || repo == m[1] || strings.HasPrefix(repo, m[1]+"/")) {
			return true
		}
	}
	return false
}

// handlerPolicy is fuzzPolicy without resolution, so the fuzzer spends its time on decoding
// and planning, plus an excluded namespace and an audit rule so those paths run too.
const handlerPolicy = mirrorsPolicy + `resolve: {enabled: false}
exclude:
  namespaces: [kube-system]
  images: ["registry.k8s.io/*", "docker.io/excluded/*"]
rules:
  - name: audit
    namespaces: ["audit-*"]
    mode: Audit
    imagePullSecrets: [audit-pull]
`

// capture records the request controller-runtime decoded, to check the patch against it.
type capture struct {
	h   admission.Handler
	req *admission.Request
}

func (c *capture) Handle(ctx context.Context, req admission.Request) admission.Response {
	c.req = &req
	return c.h.Handle(ctx, req)
}

// FuzzHandler sends arbitrary bytes through controller-runtime's webhook HTTP handler, which
// decodes them exactly as serve does, to pullgate's Handler. Properties: no panic (recovery is
// off); the answer is an AdmissionReview; a patch only comes with allowed, and it applies
// cleanly to the object as decoded and leaves a decodable Pod; applying it and asking again
// gives no further patch.
func FuzzHandler(f *testing.F) {
	for _, seed := range handlerSeeds() {
		f.Add(seed)
	}
	pol := fuzzCompile(f, handlerPolicy)
	h := &Handler{Policy: staticSource{pol}, OwnNamespace: "pullgate"}
	noPanic := false
	f.Fuzz(func(t *testing.T, body []byte) {
		c := &capture{h: h}
		wh := &admission.Webhook{Handler: c, RecoverPanic: &noPanic, LogConstructor: func(logr.Logger, *admission.Request) logr.Logger { return logr.Discard() }}
		resp := serveReview(t, wh, body)
		if len(resp.Patch) == 0 {
			return
		}
		if !resp.Allowed || c.req == nil {
			t.Fatalf("patch without an allowed, decoded request: allowed=%v", resp.Allowed)
		}
		headerSafe(t, "warning", resp.Warnings)
		var ops []map[string]any
		if err := json.Unmarshal(resp.Patch, &ops); err != nil {
			t.Fatalf("patch %s: %v", resp.Patch, err)
		}
		patched, _ := applyPatch(t, c.req.Object.Raw, ops)

		// Reinvocation: the API server calls again with the patched object.
		c.req.Object.Raw = patched
		again := wh.Handle(context.Background(), *c.req)
		if len(again.Patch) != 0 {
			t.Fatalf("own output patched again: %s", again.Patch)
		}
	})
}

type staticSource struct{ c *policy.Compiled }

func (s staticSource) Current() *policy.Compiled { return s.c }

// serveReview posts body to the webhook over an in-memory HTTP exchange and decodes the answer.
func serveReview(t *testing.T, wh http.Handler, body []byte) admissionv1.AdmissionResponse {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/mutate-v1-pod", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	wh.ServeHTTP(rec, req)
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil {
		t.Fatalf("answer is not an AdmissionReview: %v: %q", err, rec.Body.String())
	}
	if review.Response == nil {
		t.Fatalf("AdmissionReview without a response: %q", rec.Body.String())
	}
	if len(review.Response.Patch) > 0 && (review.Response.PatchType == nil || *review.Response.PatchType != admissionv1.PatchTypeJSONPatch) {
		t.Fatalf("patch without patchType JSONPatch")
	}
	return *review.Response
}

// handlerSeeds are AdmissionReviews that reach every branch: CREATE, UPDATE, the
// ephemeralcontainers subresource, audit, excluded namespaces, opt-out attempts, and garbage.
func handlerSeeds() [][]byte {
	review := func(op, sub, ns, object, old string) []byte {
		s := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"version":"v1","kind":"Pod"},"resource":{"version":"v1","resource":"pods"},` +
			`"subResource":"` + sub + `","namespace":"` + ns + `","operation":"` + op + `","object":` + object
		if old != "" {
			s += `,"oldObject":` + old
		}
		return []byte(s + `}}`)
	}
	pod := func(spec string) string {
		return `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":` + spec + `}`
	}
	const d = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	all := pod(`{"initContainers":[{"name":"i","image":"busybox:1"}],"containers":[{"name":"c","image":"nginx:1.27@` + d + `","imagePullPolicy":"Always"},{"name":"q","image":"quay.io/a/b"}],` +
		`"ephemeralContainers":[{"name":"e","image":"localhost:5000/dbg@` + d + `"}],"volumes":[{"name":"v","emptyDir":{}},{"name":"m","image":{"reference":"[::1]:5000/data:1"}}],"imagePullSecrets":[{"name":"own"}]}`)
	old := pod(`{"containers":[{"name":"c","image":"nginx:1.26"},{"name":"q","image":"quay.io/a/b"}]}`)
	return [][]byte{
		review("CREATE", "", "apps", all, ""),
		review("CREATE", "", "audit-x", all, ""),
		review("CREATE", "", "kube-system", all, ""),
		review("CREATE", "", "pullgate", all, ""),
		review("UPDATE", "", "apps", all, old),
		review("UPDATE", "ephemeralcontainers", "apps", all, old),
		review("UPDATE", "", "apps", all, ""),
		review("DELETE", "", "apps", "null", all),
		review("CREATE", "", "apps", "null", ""),
		review("CREATE", "", "apps", `{"kind":"Secret","apiVersion":"v1"}`, ""),
		review("CREATE", "", "apps", pod(`{"containers":[{"name":"c","image":"nginx"},{"name":"c","image":"nginx"}]}`), ""),
		review("CREATE", "", "apps", `{"kind":"Pod","metadata":{"annotations":{"pullgate.dev/skip":"true","pullgate.dev/imagePullSecrets":"evil"}},"spec":{"containers":[{"name":"c","image":"nginx"}]}}`, ""),
		review("CREATE", "", "apps", `{"kind":"Pod","spec":{"containers":[{"name":"c","image":"nginx\u0000:1"},{"name":"x","image":"`+strings.Repeat("a", 1100)+`"}]}}`, ""),
		review("CREATE", "", "apps", `{"kind":"Pod","spec":{"imagePullSecrets":null,"containers":[{"name":"c","image":"nginx"}],"x":[[[[[[[[[[]]]]]]]]]]}}`, ""),
		[]byte(`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u","resource":{"version":"v1","resource":"pods"},"operation":"CREATE","object":` + pod(`{"containers":[{"name":"c","image":"nginx"}]}`) + `}}`),
		[]byte(`{"request":{"resource":{"version":"v1","resource":"pods"},"operation":"CREATE","object":{"spec":{"containers":[{"image":"nginx"}]}}}}`),
		[]byte(`{"request":null}`),
		[]byte(`{`),
		[]byte("\xff\xfe"),
		nil,
	}
}

// FuzzSanitizeShortcut: what sanitize returns unchanged without looking at runes, the careful
// way returns unchanged too.
func FuzzSanitizeShortcut(f *testing.F) {
	for _, s := range []string{"", "a", " a", "a ", "a  b", "a b", "a\tb", "é", "a\x7fb", strings.Repeat("x", maxWarningLength+1), strings.Repeat("x", maxWarningLength)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if alreadySanitized(s) && sanitizeRunes(s) != s {
			t.Fatalf("%q taken as sanitized, but sanitizing gives %q", s, sanitizeRunes(s))
		}
	})
}
