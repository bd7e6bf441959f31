package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/resolve"
)

// requestBound is a hang detector for one admission over HTTPS: far above the 2s resolve
// budget, far below the client's 10s timeout.
const requestBound = 5 * time.Second

// testPushAgent marks the tests' own pushes, which the registries let through unauthenticated.
const testPushAgent = "pullgate-security-test-push"

// authRegistry is an in-memory registry on 127.0.0.1 that demands HTTP basic credentials.
type authRegistry struct {
	host string
	user string
	pass string
	// accept: the configured password is the right one. Otherwise every pull gets 401.
	accept atomic.Bool
	// echo: a misbehaving registry that does not answer HEAD (so the manifest is fetched with
	// GET, whose error body the client reads) and quotes the Authorization header back in its
	// 401 body. echoed counts the answers that carried the right credentials back.
	echo   atomic.Bool
	echoed atomic.Int64
	// authorized counts pulls that came with the right credentials.
	authorized atomic.Int64
}

func newAuthRegistry(t *testing.T, user, pass string) *authRegistry {
	t.Helper()
	r := &authRegistry{user: user, pass: pass}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.Contains(req.UserAgent(), testPushAgent) {
			inner.ServeHTTP(w, req)
			return
		}
		if r.echo.Load() && req.Method == http.MethodHead && strings.Contains(req.URL.Path, "/manifests/") {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		if u, p, ok := req.BasicAuth(); ok && u == r.user && p == r.pass && r.accept.Load() {
			r.authorized.Add(1)
			inner.ServeHTTP(w, req)
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		msg := "authentication required"
		if r.echo.Load() {
			msg = "bad credentials: " + req.Header.Get("Authorization")
			if u, p, ok := req.BasicAuth(); ok && u == r.user && p == r.pass {
				r.echoed.Add(1)
			}
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": "UNAUTHORIZED", "message": msg}}})
	}))
	t.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

// pushRandom writes a random image to host/repoTag and returns its digest.
func pushRandom(t *testing.T, host, repoTag string) string {
	t.Helper()
	ref, err := name.NewTag(host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(128, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithUserAgent(testPushAgent)); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// postRaw sends body and returns the raw answer and its decoded response, checking the answer
// came within requestBound and is an AdmissionReview with a response.
func (s *server) postRaw(t *testing.T, body []byte) ([]byte, *admissionv1.AdmissionResponse) {
	t.Helper()
	start := time.Now()
	resp, err := s.client.Post(s.url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if took > requestBound {
		t.Errorf("answered after %v, more than %v", took, requestBound)
	}
	t.Logf("%d bytes answered in %v", len(body), took.Round(time.Millisecond))
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(raw, &review); err != nil || review.Response == nil {
		t.Fatalf("HTTP %d, not an AdmissionReview with a response (%v): %.300q", resp.StatusCode, err, raw)
	}
	return raw, review.Response
}

// admissionBody wraps a pod object (raw JSON) in an AdmissionReview request.
func admissionBody(op, object, extra string) []byte {
	return []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"hostile-1",` +
		`"kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},` +
		`"namespace":"apps","operation":"` + op + `","object":` + object + extra + `}}`)
}

func podObject(containers string) string {
	return `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[` + containers + `]}}`
}

// patchedPod applies a response's patch to the object that was sent, as the API server would,
// and decodes the result into a Pod.
func patchedPod(t *testing.T, object []byte, r *admissionv1.AdmissionResponse) *corev1.Pod {
	t.Helper()
	if len(r.Patch) > 0 {
		if r.PatchType == nil || *r.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("patch without patchType JSONPatch")
		}
		patch, err := jsonpatch.DecodePatch(r.Patch)
		if err != nil {
			t.Fatalf("patch does not decode: %v", err)
		}
		if object, err = patch.Apply(object); err != nil {
			t.Fatalf("patch does not apply: %v", err)
		}
	}
	var p corev1.Pod
	if err := json.Unmarshal(object, &p); err != nil {
		t.Fatalf("patched pod does not decode: %v", err)
	}
	return &p
}

// TestServeHostileBodies sends hostile AdmissionReviews over HTTPS to the real server. Each
// gets, within requestBound, an AdmissionReview that is a clean error or a correct answer;
// every patch applies to what was sent and leaves a Pod; the server stays healthy.
func TestServeHostileBodies(t *testing.T) {
	s := startServe(t, writeFile(t, "policy.yaml", offlinePolicy))
	const limit = 7 << 20 // controller-runtime's request body limit
	nginx := `{"name":"c","image":"nginx:1.27"}`
	many := strings.TrimSuffix(strings.Repeat(`{"name":"c","image":"nginx:1.27"},`, 1000), ",")
	longImage := "registry.example.com/" + strings.Repeat("a", 4096-len("registry.example.com/"))
	// bigPod is a pod whose AdmissionReview is exactly size bytes long.
	bigPod := func(size int) string {
		obj := func(pad int) string {
			return `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{"a":"` + strings.Repeat("x", pad) + `"}},"spec":{"containers":[` + nginx + `]}}`
		}
		return obj(size - len(admissionBody("CREATE", obj(0), "")))
	}
	cases := []struct {
		name string
		body []byte
		// object is what the patch applies to; empty when no patch may come.
		object string
		// code is the result code wanted: 200 allowed (with or without patch), else an error.
		code int32
		// check looks at the patched pod.
		check func(t *testing.T, p *corev1.Pod)
	}{
		{name: "7 MiB + 1 byte", body: admissionBody("CREATE", bigPod(limit+1), ""), code: http.StatusRequestEntityTooLarge},
		{name: "7 MiB", body: admissionBody("CREATE", bigPod(limit), ""), code: http.StatusRequestEntityTooLarge}, // the limit is exclusive
		{name: "7 MiB - 1 byte", body: admissionBody("CREATE", bigPod(limit-1), ""), object: bigPod(limit - 1), code: 200, check: movedToMirror},
		{name: "100k nested arrays in an unknown field", body: admissionBody("CREATE", podObject(nginx), `,"x":`+strings.Repeat("[", 100000)+strings.Repeat("]", 100000)), code: 400},
		{name: "100k nested arrays inside the object", body: admissionBody("CREATE", `{"kind":"Pod","x":`+strings.Repeat("[", 100000)+strings.Repeat("]", 100000)+`}`, ""), code: 400},
		{name: "1,000 containers", body: admissionBody("CREATE", podObject(many), ""), object: podObject(many), code: 200, check: movedToMirror},
		{name: "duplicate container names", body: admissionBody("CREATE", podObject(nginx+","+nginx), ""), object: podObject(nginx + "," + nginx), code: 200, check: movedToMirror},
		{name: "4,096-character image", body: admissionBody("CREATE", podObject(`{"name":"c","image":"`+longImage+`"}`), ""), object: podObject(`{"name":"c","image":"` + longImage + `"}`), code: 200, check: imageIs(longImage)},
		{name: "escaped NUL in the image", body: admissionBody("CREATE", podObject(`{"name":"c","image":"nginx\u0000:1"}`), ""), object: podObject(`{"name":"c","image":"nginx\u0000:1"}`), code: 200, check: imageIs("nginx\x00:1")},
		{name: "raw NUL byte in a string", body: admissionBody("CREATE", podObject("{\"name\":\"c\",\"image\":\"nginx\x00:1\"}"), ""), code: 400},
		{name: "non-UTF-8 bytes", body: admissionBody("CREATE", podObject("{\"name\":\"c\",\"image\":\"ngin\xffx\"},"+nginx), ""), object: podObject("{\"name\":\"c\",\"image\":\"ngin\xffx\"}," + nginx), code: 200},
		// controller-runtime decodes the review by its structure whatever version it declares.
		{name: "AdmissionReview of an unknown version", body: bytes.Replace(admissionBody("CREATE", podObject(nginx), ""), []byte("admission.k8s.io/v1"), []byte("admission.k8s.io/v9"), 1), object: podObject(nginx), code: 200, check: movedToMirror},
		{name: "request for another resource", body: bytes.Replace(admissionBody("CREATE", podObject(nginx), ""), []byte(`"group":"","version":"v1","resource":"pods"`), []byte(`"group":"apps","version":"v1","resource":"deployments"`), 1), code: 200},
		{name: "object of another kind", body: admissionBody("CREATE", `{"apiVersion":"v1","kind":"Secret","data":{"a":"Yg=="}}`, ""), code: 400},
		{name: "missing uid", body: bytes.Replace(admissionBody("CREATE", podObject(nginx), ""), []byte(`"uid":"hostile-1",`), nil, 1), object: podObject(nginx), code: 200, check: movedToMirror},
		{name: "object null", body: admissionBody("CREATE", "null", ""), code: 400},
		{name: "UPDATE without oldObject", body: admissionBody("UPDATE", podObject(nginx), ""), code: 400},
		{name: "UPDATE with oldObject null", body: admissionBody("UPDATE", podObject(nginx), `,"oldObject":null`), code: 400},
		{name: "request null", body: []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":null}`), code: 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, r := s.postRaw(t, tc.body)
			code := int32(200)
			if r.Result != nil && r.Result.Code != 0 {
				code = r.Result.Code
			}
			if code != tc.code || r.Allowed != (tc.code == 200) {
				msg := ""
				if r.Result != nil {
					msg = r.Result.Message
				}
				t.Fatalf("allowed=%v code=%d (%.200s), want code %d", r.Allowed, code, msg, tc.code)
			}
			if tc.object == "" {
				if len(r.Patch) != 0 {
					t.Fatalf("unexpected patch %.300s", r.Patch)
				}
				return
			}
			p := patchedPod(t, []byte(tc.object), r)
			if tc.check != nil {
				tc.check(t, p)
			}
		})
	}
	// Still healthy and answering.
	if r, _ := s.post(t, reviewJSON(t)); !r.Allowed || len(r.Patch) == 0 {
		t.Fatalf("good request after hostile ones: allowed=%v patch=%s", r.Allowed, r.Patch)
	}
}

func movedToMirror(t *testing.T, p *corev1.Pod) {
	t.Helper()
	for _, c := range p.Spec.Containers {
		if c.Image != "mirror.example.com/hub/library/nginx:1.27" {
			t.Fatalf("container image %q, want it on the mirror", c.Image)
		}
	}
	if len(p.Spec.ImagePullSecrets) != 1 || p.Spec.ImagePullSecrets[0].Name != "mirror-pull" {
		t.Fatalf("pull secrets %v", p.Spec.ImagePullSecrets)
	}
}

func imageIs(want string) func(t *testing.T, p *corev1.Pod) {
	return func(t *testing.T, p *corev1.Pod) {
		t.Helper()
		if got := p.Spec.Containers[0].Image; got != want {
			t.Fatalf("image %q changed to %q", want, got)
		}
	}
}

// TestServeNeverLeaksCredentials runs serve at -v 1 with a mirror whose credentialsFile holds a
// known password, against a registry that demands it: first rejecting it, then rejecting it
// while quoting the request's Authorization header back in its error, then accepting it. The
// password and its base64 forms never appear in the server's log, the responses (warnings,
// messages, audit annotations) or /metrics. The same holds for `webhook mutate -v 1` and for a
// credentials file so malformed that its error is logged.
func TestServeNeverLeaksCredentials(t *testing.T) {
	const user, secret = "robot", "s3cr3t-ZXCV-9876"
	reg := newAuthRegistry(t, user, secret)
	digest := pushRandom(t, reg.host, "hub/library/nginx:1.27")
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + secret))
	forbidden := []string{
		secret, basic, strings.TrimRight(basic, "="), base64.URLEncoding.EncodeToString([]byte(user + ":" + secret)),
		base64.StdEncoding.EncodeToString([]byte(secret)), strings.TrimRight(base64.StdEncoding.EncodeToString([]byte(secret)), "="),
	}
	creds := writeFile(t, "config.json", fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, reg.host, basic))
	pol := fmt.Sprintf(`apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors: [{registry: docker.io, mirror: %s/hub, insecure: true, credentialsFile: %s}]
resolve: {timeout: 2s, cacheTTL: 1ns, maxStale: 1ns}
imagePullSecrets: [mirror-pull]
`, reg.host, creds)
	policyPath := writeFile(t, "policy.yaml", pol)
	s := startServe(t, policyPath)

	var answers bytes.Buffer
	review := func(image string) *admissionv1.AdmissionResponse {
		t.Helper()
		raw, r := s.postRaw(t, admissionBody("CREATE", podObject(`{"name":"c","image":"`+image+`"}`), ""))
		answers.Write(raw)
		return r
	}

	// 1. Wrong password: admitted unpinned, with a warning that says why.
	r := review("nginx:1.27")
	if !r.Allowed || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], "denied") {
		t.Fatalf("rejected credentials: allowed=%v warnings=%q", r.Allowed, r.Warnings)
	}
	// 2. The registry quotes the credentials it was sent back in its error body.
	reg.echo.Store(true)
	r = review("nginx:1.27")
	if !r.Allowed || len(r.Warnings) != 1 || reg.echoed.Load() == 0 {
		t.Fatalf("echoing registry: allowed=%v warnings=%q, %d answers quoted the credentials", r.Allowed, r.Warnings, reg.echoed.Load())
	}
	reg.echo.Store(false)
	// 3. Right password: pinned.
	reg.accept.Store(true)
	r = review("nginx:1.27")
	if !strings.Contains(string(r.Patch), digest) || reg.authorized.Load() == 0 {
		t.Fatalf("accepted credentials: patch %s, %d authorized pulls, warnings %q", r.Patch, reg.authorized.Load(), r.Warnings)
	}
	// 4. The same in audit mode, whose warnings and annotations describe every change.
	if err := os.WriteFile(policyPath, []byte(pol+"mode: Audit\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if r := review("nginx:1.27"); len(r.Patch) != 0 || len(r.Warnings) == 0 {
			return fmt.Errorf("audit policy not in force yet")
		}
		return nil
	})

	metricsText := fetch(t, s.metrics)

	// The offline command reads the same file and logs at -v 1.
	mutateOut, mutateErr, _ := runCmd(t, reviewYAML, "mutate", "--policy", policyPath, "-v", "1")

	// A malformed credentials file is an error in the log, which must not quote the file.
	for i, broken := range []string{
		`{"auths":{"` + reg.host + `":{"auth":"` + secret + `"}}}`,               // not base64
		`{"auths":{"` + reg.host + `":{"password":["` + secret + `"]}}}`,         // wrong type
		`{"auths":{"` + reg.host + `":{"username":"robot","password":"` + secret, // truncated
		`{"auths":{"` + reg.host + `":"` + secret + `"}}`,                        // not an object
	} {
		path := writeFile(t, fmt.Sprintf("broken-%d.json", i), broken)
		bad := strings.Replace(pol, creds, path, 1)
		_, errOut, _ := runCmd(t, reviewYAML, "mutate", "--policy", writeFile(t, "bad.yaml", bad), "-v", "1")
		if !strings.Contains(errOut, "credentials") {
			t.Errorf("broken credentials file %d: no error about it in %q", i, errOut)
		}
		mutateErr += errOut
	}

	for where, text := range map[string]string{
		"server log":          s.stderr.String(),
		"admission responses": answers.String(),
		"/metrics":            metricsText,
		"mutate output":       mutateOut + mutateErr,
	} {
		for _, f := range forbidden {
			if i := strings.Index(text, f); i >= 0 {
				t.Errorf("%s discloses the credentials (%q) at %q", where, f, text[max(0, i-120):min(len(text), i+len(f)+20)])
			}
		}
	}
}

// TestReloadUnderLoad swaps the policy back and forth while admissions run in parallel against
// a real registry and resolver. No admission fails or is dropped, and every answer is wholly
// one policy's: its mirror, the digest that mirror holds, and its pull secret, never a mix.
func TestReloadUnderLoad(t *testing.T) {
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(inner)
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	digests := map[string]string{"a": pushRandom(t, host, "a/library/nginx:1.27"), "b": pushRandom(t, host, "b/library/nginx:1.27")}
	if digests["a"] == digests["b"] {
		t.Fatal("the two mirrors must hold different images")
	}
	policyFor := func(v string) string {
		// cacheTTL 1ns: every admission asks the registry, so reloads race real lookups.
		return fmt.Sprintf(`apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors: [{registry: docker.io, mirror: %s/%s, insecure: true}]
resolve: {timeout: 5s, cacheTTL: 1ns}
imagePullSecrets: [pull-%s]
`, host, v, v)
	}
	path := writeFile(t, "policy.yaml", policyFor("a"))
	ctx := context.Background()
	res, err := resolve.New(resolve.Options{})
	if err != nil {
		t.Fatal(err)
	}
	store := &policyStore{path: path, log: logr.Discard()}
	reconfig := &reconfigurer{policy: store, secrets: &secrets{}, resolver: res, log: logr.Discard()}
	store.onChange = func() { reconfig.apply(ctx) }
	if _, err := store.load(); err != nil {
		t.Fatal(err)
	}
	h := mutate.NewHandler(mutate.Handler{Policy: store, Resolver: res})
	object := []byte(podObject(`{"name":"c","image":"nginx:1.27"}`))

	const workers, reloads = 4, 40
	var stop atomic.Bool
	var seen [2]atomic.Int64 // answers consistent with policy a, b
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	answered := make(chan struct{}, 1) // an admission finished (coalesced)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; !stop.Load() || n == 0; n++ {
				req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
					UID: "u", Namespace: "apps", Operation: admissionv1.Create,
					Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
					Object:   runtime.RawExtension{Raw: object},
				}}
				resp := h.Handle(ctx, req)
				if err := resp.Complete(req); err != nil {
					errs <- err
					return
				}
				v, err := consistentWith(resp, object, host, digests)
				if err != nil {
					errs <- fmt.Errorf("admission %d: %w", n, err)
					return
				}
				seen[v].Add(1)
				select {
				case answered <- struct{}{}:
				default:
				}
			}
		}()
	}
	t.Cleanup(func() { stop.Store(true); wg.Wait() }) // also when a check below fails
	for i := range reloads {
		v := []string{"b", "a"}[i%2]
		if err := os.WriteFile(path, []byte(policyFor(v)), 0o600); err != nil {
			t.Fatal(err)
		}
		if changed, err := store.load(); err != nil || !changed {
			t.Fatalf("reload %d: changed=%v err=%v", i, changed, err)
		}
		// Let admissions run under each policy before swapping again: wait until one more
		// finishes after this reload (or a worker fails).
		select {
		case <-answered:
		default:
		}
		select {
		case <-answered:
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(requestBound):
			t.Fatalf("no admission finished within %v of reload %d", requestBound, i)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if seen[0].Load() == 0 || seen[1].Load() == 0 {
		t.Errorf("answers under a: %d, under b: %d; want both", seen[0].Load(), seen[1].Load())
	}
	t.Logf("%d reloads; %d answers under a, %d under b", reloads, seen[0].Load(), seen[1].Load())
}

// consistentWith reports which policy (0 for a, 1 for b) an answer wholly follows.
func consistentWith(resp admission.Response, object []byte, host string, digests map[string]string) (int, error) {
	if !resp.Allowed || len(resp.Warnings) != 0 {
		return 0, fmt.Errorf("allowed=%v warnings=%q result=%v", resp.Allowed, resp.Warnings, resp.Result)
	}
	patch, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		return 0, err
	}
	out, err := patch.Apply(object)
	if err != nil {
		return 0, err
	}
	var p corev1.Pod
	if err := json.Unmarshal(out, &p); err != nil {
		return 0, err
	}
	for i, v := range []string{"a", "b"} {
		image := host + "/" + v + "/library/nginx:1.27@" + digests[v]
		if p.Spec.Containers[0].Image == image && len(p.Spec.ImagePullSecrets) == 1 && p.Spec.ImagePullSecrets[0].Name == "pull-"+v {
			return i, nil
		}
	}
	return 0, fmt.Errorf("answer follows neither policy: image %s, pull secrets %v", p.Spec.Containers[0].Image, p.Spec.ImagePullSecrets)
}
