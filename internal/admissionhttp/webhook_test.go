package admissionhttp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/policy"
)

// loadPod is the load test's pod: a Deployment's pod as the API server hands it to webhooks
// after defaulting. Decoding it is a real part of an admission's cost, which a bare pod would hide.
const loadPod = `{"kind":"Pod","apiVersion":"v1","metadata":{"generateName":"web-7d4b9c8f6-","namespace":"apps","labels":{"app.kubernetes.io/name":"web","pod-template-hash":"7d4b9c8f6"},"annotations":{"kubectl.kubernetes.io/restartedAt":"2026-01-01T00:00:00Z"},"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-7d4b9c8f6","uid":"6f1e0c55-2b0a-4a53-9d1c-0b8f4f1d2c3e","controller":true,"blockOwnerDeletion":true}]},"spec":{"volumes":[{"name":"kube-api-access-x7k2p","projected":{"sources":[{"serviceAccountToken":{"expirationSeconds":3607,"path":"token"}},{"configMap":{"name":"kube-root-ca.crt","items":[{"key":"ca.crt","path":"ca.crt"}]}}],"defaultMode":420}}],"containers":[{"name":"c0","image":"docker.io/library/nginx:1.27","ports":[{"name":"http","containerPort":8080,"protocol":"TCP"}],"env":[{"name":"LOG_LEVEL","value":"info"},{"name":"POD_NAME","valueFrom":{"fieldRef":{"apiVersion":"v1","fieldPath":"metadata.name"}}}],"resources":{"limits":{"memory":"256Mi"},"requests":{"cpu":"100m","memory":"128Mi"}},"volumeMounts":[{"name":"kube-api-access-x7k2p","readOnly":true,"mountPath":"/var/run/secrets/kubernetes.io/serviceaccount"}],"readinessProbe":{"httpGet":{"path":"/readyz","port":8080,"scheme":"HTTP"},"timeoutSeconds":1,"periodSeconds":10,"successThreshold":1,"failureThreshold":3},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"IfNotPresent"}],"restartPolicy":"Always","terminationGracePeriodSeconds":30,"dnsPolicy":"ClusterFirst","serviceAccountName":"default","securityContext":{},"schedulerName":"default-scheduler","tolerations":[{"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300},{"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":300}],"priority":0,"enableServiceLinks":true,"preemptionPolicy":"PreemptLowerPriority"},"status":{}}`

// reviewOf is a v1 AdmissionReview whose request has the given fields besides the usual ones.
func reviewOf(op, namespace, object, extra string) []byte {
	return []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"705ab4f5-6393-11e8-b7cc-42010a800002",` +
		`"kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},` +
		`"requestKind":{"group":"","version":"v1","kind":"Pod"},"requestResource":{"group":"","version":"v1","resource":"pods"},` +
		`"name":"web-1","namespace":"` + namespace + `","operation":"` + op + `",` +
		`"userInfo":{"username":"system:serviceaccount:kube-system:replicaset-controller","groups":["system:authenticated"]},` +
		`"object":` + object + `,"dryRun":false` + extra + `}}`)
}

// testHandler is pullgate's handler on the offline policy (mirror rewrite, no resolution), with
// a few namespaces that answer what pullgate's handler never does, to cover Response.Complete.
func testHandler(t testing.TB) admission.Handler {
	t.Helper()
	pol, err := policy.Check([]byte(offlinePolicy))
	if err != nil {
		t.Fatal(err)
	}
	h := mutate.NewHandler(mutate.Handler{Policy: mutate.StaticPolicy{Policy: pol}, OwnNamespace: "pullgate"})
	return admission.HandlerFunc(func(ctx context.Context, req admission.Request) admission.Response {
		switch req.Namespace {
		case "stub-patches": // Patches, marshalled by Complete
			return admission.Patched("stub", jsonpatch.NewOperation("add", "/metadata/labels", map[string]string{"a": "<b>&"}))
		case "stub-denied":
			resp := admission.Denied("no <way>").WithWarnings("w1", "w2")
			resp.AuditAnnotations = map[string]string{"k": "v"}
			return resp
		case "stub-raw-patch": // a patch set directly, with its type
			pt := admissionv1.PatchTypeJSONPatch
			return admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{Allowed: true, Patch: []byte(`[]`), PatchType: &pt}}
		}
		return h.Handle(ctx, req)
	})
}

// controllerRuntime is the adapter Webhook replaces, configured as serve used it.
func controllerRuntime(h admission.Handler) http.Handler {
	return &admission.Webhook{Handler: h, RecoverPanic: new(true),
		LogConstructor: func(logr.Logger, *admission.Request) logr.Logger { return logr.Discard() }}
}

func send(h http.Handler, method, contentType string, body io.Reader) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, mutatePath, body)
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// decoded checks the answer is HTTP 200 with a review holding a response, and returns both.
func decoded(t *testing.T, w *httptest.ResponseRecorder) (admissionv1.AdmissionReview, *admissionv1.AdmissionResponse) {
	t.Helper()
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(w.Body.Bytes(), &review); err != nil || review.Response == nil {
		t.Fatalf("HTTP %d, not a review with a response (%v): %.300q", w.Code, err, w.Body.String())
	}
	if w.Code != http.StatusOK {
		t.Errorf("HTTP %d, want 200 as controller-runtime answers", w.Code)
	}
	return review, review.Response
}

func resultCode(r *admissionv1.AdmissionResponse) int32 {
	if r.Result == nil {
		return 0
	}
	return r.Result.Code
}

// TestAdmissionHTTPMatchesControllerRuntime sends the same requests to Webhook and to
// controller-runtime's adapter on the same handler. Where both decode the review, the answers
// must be the same bytes; where both refuse it, the same code (only the decoder's wording differs).
func TestAdmissionHTTPMatchesControllerRuntime(t *testing.T) {
	t.Parallel()
	h := testHandler(t)
	ours := &Webhook{Handler: h, Log: logr.Discard()}
	theirs := controllerRuntime(h)
	nginx := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"nginx:1.27"}]}}`
	onMirror := strings.Replace(loadPod, "docker.io/library/nginx:1.27", "mirror.example.com/hub/library/nginx:1.27", 1)
	good := reviewOf("CREATE", "apps", loadPod, "")
	// more adds fields at the end of good's review, in a copy.
	more := func(fields string) []byte { return append(good[:len(good)-1:len(good)-1], fields+"}"...) }
	cases := []struct {
		name        string
		contentType string // default application/json
		body        []byte
		code        int32 // the result code of both answers; 200 is allowed
		sameBytes   bool  // else the same refusal: allowed=false and the same code
	}{
		{name: "create, moved to the mirror", code: 200, body: good, sameBytes: true},
		{name: "update with oldObject", code: 200, body: reviewOf("UPDATE", "apps", loadPod, `,"oldObject":`+onMirror), sameBytes: true},
		{name: "already on the mirror", code: 200, body: reviewOf("CREATE", "apps", onMirror, ""), sameBytes: true},
		{name: "own namespace", code: 200, body: reviewOf("CREATE", "pullgate", loadPod, ""), sameBytes: true},
		{name: "delete", code: 200, body: reviewOf("DELETE", "apps", "null", `,"oldObject":`+loadPod), sameBytes: true},
		{name: "another resource", code: 200, body: bytes.Replace(good, []byte(`"version":"v1","resource":"pods"}`), []byte(`"version":"v1","resource":"secrets"}`), 1), sameBytes: true},
		{name: "object of another kind", code: 400, body: reviewOf("CREATE", "apps", `{"apiVersion":"v1","kind":"Secret"}`, ""), sameBytes: true},
		{name: "object null", code: 400, body: reviewOf("CREATE", "apps", "null", ""), sameBytes: true},
		{name: "non-UTF-8 image", code: 200, body: reviewOf("CREATE", "apps", strings.Replace(nginx, "nginx:1.27", "ngin\xffx", 1), ""), sameBytes: true},
		{name: "escaped NUL in the image", code: 200, body: reviewOf("CREATE", "apps", strings.Replace(nginx, "nginx:1.27", `nginx\u0000:1`, 1), ""), sameBytes: true},
		{name: "missing uid", code: 200, body: bytes.Replace(good, []byte(`"uid":"705ab4f5-6393-11e8-b7cc-42010a800002",`), nil, 1), sameBytes: true},
		{name: "patches marshalled by Complete", code: 200, body: reviewOf("CREATE", "stub-patches", nginx, ""), sameBytes: true},
		{name: "denied with warnings and audit annotations", code: 403, body: reviewOf("CREATE", "stub-denied", nginx, ""), sameBytes: true},
		{name: "raw patch", code: 200, body: reviewOf("CREATE", "stub-raw-patch", nginx, ""), sameBytes: true},
		// The envelope: what the API server never sends, answered as controller-runtime does.
		{name: "v1beta1 review: answered in v1beta1", code: 200, body: bytes.Replace(good, []byte("admission.k8s.io/v1"), []byte("admission.k8s.io/v1beta1"), 1), sameBytes: true},
		{name: "unknown version: decoded by structure, echoed", code: 200, body: bytes.Replace(good, []byte("admission.k8s.io/v1"), []byte("admission.k8s.io/v9"), 1), sameBytes: true},
		{name: "another kind: echoed", code: 200, body: bytes.Replace(good, []byte(`"kind":"AdmissionReview"`), []byte(`"kind":"Pod"`), 1), sameBytes: true},
		{name: "no apiVersion nor kind: answered in v1", code: 200, body: bytes.Replace(good, []byte(`"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",`), nil, 1), sameBytes: true},
		{name: "request null: an empty request", code: 200, body: []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":null}`), sameBytes: true},
		{name: "no request: an empty request", code: 200, body: []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), sameBytes: true},
		{name: "request then request null: the first one", code: 200, body: more(`,"request":null`), sameBytes: true},
		{name: "keys in another case are not the fields", code: 200, body: bytes.Replace(bytes.Replace(good, []byte(`"uid"`), []byte(`"UID"`), 1), []byte(`"operation"`), []byte(`"Operation"`), 1), sameBytes: true},
		{name: "unknown fields ignored", code: 200, body: more(`,"x":{"y":[1,2]}`), sameBytes: true},
		// What the one-pass decoding cannot take exactly, taken the raw way (Decode).
		{name: "object twice: the last one", code: 200, body: more(`,"object":` + onMirror), sameBytes: true},
		{name: "object twice, the last null: the first one", code: 200, body: more(`,"object":null`), sameBytes: true},
		{name: "oldObject twice", code: 200, body: reviewOf("UPDATE", "apps", loadPod, `,"oldObject":`+loadPod+`,"oldObject":`+onMirror), sameBytes: true},
		{name: "another resource, not pod-shaped", code: 200, body: bytes.Replace(reviewOf("CREATE", "apps", `{"apiVersion":"v1","kind":"Secret","spec":"x","metadata":{"annotations":[1]}}`, ""), []byte(`"resource":"pods"}`), []byte(`"resource":"secrets"}`), 1), sameBytes: true},
		{name: "a pod whose image is not a string", code: 400, body: reviewOf("CREATE", "apps", strings.Replace(nginx, `"nginx:1.27"`, `{"$ne":""}`, 1), "")},
		// Refusals.
		{name: "empty body", code: 400, body: nil, sameBytes: true},
		{name: "wrong content type", code: 400, contentType: "application/yaml", body: good, sameBytes: true},
		{name: "content type with parameters", code: 400, contentType: "application/json; charset=utf-8", body: good, sameBytes: true},
		{name: "7 MiB", code: 413, body: reviewOf("CREATE", "apps", paddedPod(MaxBodySize-len(reviewOf("CREATE", "apps", paddedPod(0), ""))), ""), sameBytes: true},
		{name: "malformed", code: 400, body: []byte("{not json")},
		{name: "trailing data", code: 400, body: append(good[:len(good):len(good)], " {}"...)},
		{name: "JSON array", code: 400, body: []byte("[]")},
		{name: "raw NUL byte in a string", code: 400, body: reviewOf("CREATE", "apps", strings.Replace(nginx, "nginx:1.27", "nginx\x00:1", 1), "")},
		{name: "100k nested arrays", code: 400, body: reviewOf("CREATE", "apps", nginx, `,"x":`+strings.Repeat("[", 100000)+strings.Repeat("]", 100000))},
		{name: "wrong type for a field", code: 400, body: bytes.Replace(good, []byte(`"dryRun":false`), []byte(`"dryRun":"no"`), 1)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ct := tc.contentType
			if ct == "" {
				ct = "application/json"
			}
			body := func() io.Reader { return nil }
			if tc.body != nil {
				body = func() io.Reader { return bytes.NewReader(tc.body) }
			}
			got, want := send(ours, http.MethodPost, ct, body()), send(theirs, http.MethodPost, ct, body())
			_, g := decoded(t, got)
			_, w := decoded(t, want)
			if resultCode(g) != tc.code || g.Allowed != (tc.code == http.StatusOK) {
				t.Errorf("allowed=%v code %d, want code %d", g.Allowed, resultCode(g), tc.code)
			}
			if tc.sameBytes {
				if !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) {
					t.Fatalf("answers differ\nours:               %.600s\ncontroller-runtime: %.600s", got.Body, want.Body)
				}
				return
			}
			if g.Allowed || w.Allowed || resultCode(g) != resultCode(w) || len(g.Patch) != 0 {
				t.Fatalf("ours allowed=%v code=%d, controller-runtime allowed=%v code=%d", g.Allowed, resultCode(g), w.Allowed, resultCode(w))
			}
		})
	}
}

// TestDecodeReviewOnePass: a review from the API server has its pod decoded along with it; one
// that cannot be is decoded again with the objects kept raw.
func TestDecodeReviewOnePass(t *testing.T) {
	t.Parallel()
	good := reviewOf("UPDATE", "apps", loadPod, `,"oldObject":`+loadPod)
	cases := []struct {
		name    string
		body    []byte
		onePass bool
	}{
		{"a pod and its old version", good, true},
		{"object null", reviewOf("CREATE", "apps", "null", ""), true},
		{"object twice", append(good[:len(good)-2:len(good)-2], `,"object":`+loadPod+"}}"...), false},
		{"not pod-shaped", reviewOf("CREATE", "apps", `{"spec":"x"}`, ""), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, typ, err := Decode(tc.body)
			if err != nil || typ.Kind != "AdmissionReview" || req.UID == "" {
				t.Fatalf("Decode: %v, %+v, uid %q", err, typ, req.UID)
			}
			decoded, ok := req.Object.Object.(*mutate.DecodedObject)
			if tc.onePass != ok || tc.onePass == (len(req.Object.Raw) > 0) {
				t.Fatalf("object decoded: %v (%T), raw: %d bytes; want one pass %v", ok, req.Object.Object, len(req.Object.Raw), tc.onePass)
			}
			if ok && string(tc.body) == string(good) {
				if kind := decoded.GetObjectKind().GroupVersionKind(); kind.Kind != "Pod" || kind.Version != "v1" {
					t.Errorf("decoded object is %v", kind)
				}
				if _, ok := req.OldObject.Object.(*mutate.DecodedObject); !ok {
					t.Errorf("oldObject not decoded: %T", req.OldObject.Object)
				}
				if cp, ok := decoded.DeepCopyObject().(*mutate.DecodedObject); !ok || cp == decoded || !reflect.DeepEqual(cp, decoded) {
					t.Errorf("DeepCopyObject: %#v", cp)
				}
			}
		})
	}
}

// paddedPod is a pod with an annotation of pad bytes, to size a review.
func paddedPod(pad int) string {
	return `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{"a":"` + strings.Repeat("x", pad) +
		`"}},"spec":{"containers":[{"name":"c","image":"nginx:1.27"}]}}`
}

// TestAdmissionHTTPRefusals covers what Webhook refuses where controller-runtime's adapter
// went on: it serves POST only, and a review it cannot decode is an error (controller-runtime
// also decodes YAML, and hands the handler an empty request for an empty chunked body). The
// API server always POSTs JSON with a Content-Length.
func TestAdmissionHTTPRefusals(t *testing.T) {
	t.Parallel()
	good := reviewOf("CREATE", "apps", loadPod, "")
	yamlBody := "apiVersion: admission.k8s.io/v1\nkind: AdmissionReview\nrequest: {uid: u, operation: CREATE}\n"
	cases := []struct {
		name   string
		method string
		body   io.Reader
		code   int32
		msg    string
	}{
		{"GET", http.MethodGet, bytes.NewReader(good), http.StatusMethodNotAllowed, "method GET, expected POST"},
		{"PUT", http.MethodPut, bytes.NewReader(good), http.StatusMethodNotAllowed, "method PUT, expected POST"},
		{"GET without body", http.MethodGet, nil, http.StatusMethodNotAllowed, "method GET, expected POST"},
		{"YAML", http.MethodPost, strings.NewReader(yamlBody), http.StatusBadRequest, "decoding the AdmissionReview: "},
		// io.MultiReader hides the length: the body comes chunked, empty.
		{"empty chunked body", http.MethodPost, io.MultiReader(), http.StatusBadRequest, "request body is empty"},
		{"empty body", http.MethodPost, nil, http.StatusBadRequest, "request body is empty"},
		{"broken body", http.MethodPost, io.MultiReader(strings.NewReader("{"), errReader{}), http.StatusBadRequest, "reading the request body: broken"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			called := false
			a := &Webhook{Log: logr.Discard(), Handler: admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
				called = true
				return admission.Allowed("")
			})}
			w := send(a, tc.method, "application/json", tc.body)
			review, r := decoded(t, w)
			if r.Allowed || resultCode(r) != tc.code || !strings.HasPrefix(r.Result.Message, tc.msg) || called {
				t.Fatalf("allowed=%v code=%d message %q handler called=%v, want code %d and %q", r.Allowed, resultCode(r), r.Result.Message, called, tc.code, tc.msg)
			}
			// Like controller-runtime's refusals: no apiVersion and kind, so the API server
			// counts a failed call rather than a denial.
			if review.APIVersion != "" || review.Kind != "" || r.UID != "" {
				t.Errorf("refusal typed %s/%s uid %q", review.APIVersion, review.Kind, r.UID)
			}
			if tc.code == http.StatusMethodNotAllowed && w.Header().Get("Allow") != http.MethodPost {
				t.Errorf("Allow: %q", w.Header().Get("Allow"))
			}
		})
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("broken") }

// TestAdmissionHTTPBodyLimit: a review of 7 MiB or more is answered 413 with a review, whether
// the client announced its length or not; one byte less is served.
func TestAdmissionHTTPBodyLimit(t *testing.T) {
	t.Parallel()
	a := &Webhook{Handler: testHandler(t), Log: logr.Discard()}
	sized := func(n int) []byte {
		b := reviewOf("CREATE", "apps", paddedPod(n-len(reviewOf("CREATE", "apps", paddedPod(0), ""))), "")
		if len(b) != n {
			panic(fmt.Sprintf("review of %d bytes, want %d", len(b), n))
		}
		return b
	}
	for _, tc := range []struct {
		size int
		code int32
	}{
		{MaxBodySize - 1, http.StatusOK},
		{MaxBodySize, http.StatusRequestEntityTooLarge},
		{MaxBodySize + 1, http.StatusRequestEntityTooLarge},
		{10 << 20, http.StatusRequestEntityTooLarge},
	} {
		body := sized(tc.size)
		for _, chunked := range []bool{false, true} {
			t.Run(fmt.Sprintf("%d bytes chunked=%v", tc.size, chunked), func(t *testing.T) {
				var r io.Reader = bytes.NewReader(body)
				if chunked {
					r = io.MultiReader(r)
				}
				_, resp := decoded(t, send(a, http.MethodPost, "application/json", r))
				if code := resultCode(resp); code != tc.code || resp.Allowed != (tc.code == http.StatusOK) {
					t.Fatalf("allowed=%v code %d (%v), want %d", resp.Allowed, code, resp.Result, tc.code)
				}
				if tc.code == http.StatusOK && len(resp.Patch) == 0 {
					t.Fatal("served without the patch")
				}
				if want := "request entity is too large; limit is 7340032 bytes"; tc.code != http.StatusOK && resp.Result.Message != want {
					t.Fatalf("message %q, want %q", resp.Result.Message, want)
				}
			})
		}
	}
}

// TestAdmissionHTTPPanic: a panic in the handler is an error answer for that request (with its
// uid), counted in controller-runtime's panic metric and logged with its stack.
func TestAdmissionHTTPPanic(t *testing.T) {
	t.Parallel()
	logs := &logLines{}
	a := &Webhook{Log: logs.logger(), Handler: admission.HandlerFunc(func(_ context.Context, req admission.Request) admission.Response {
		if req.Namespace == "panic" {
			var none []string
			_ = none[len(req.Namespace)] // a runtime error, as a bug in the handler would be
		}
		return admission.Allowed("fine")
	})}
	before := panicsTotal(t)
	review, r := decoded(t, send(a, http.MethodPost, "application/json", bytes.NewReader(reviewOf("CREATE", "panic", "{}", ""))))
	want := "panic: runtime error: index out of range [5] with length 0 [recovered]"
	if r.Allowed || resultCode(r) != http.StatusInternalServerError || r.Result.Message != want || r.UID != "705ab4f5-6393-11e8-b7cc-42010a800002" {
		t.Fatalf("allowed=%v uid %q result %+v, want code 500 %q", r.Allowed, r.UID, r.Result, want)
	}
	if review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview" {
		t.Errorf("answer typed %s/%s", review.APIVersion, review.Kind)
	}
	if after := panicsTotal(t); after != before+1 {
		t.Errorf("controller_runtime_webhook_panics_total went from %v to %v", before, after)
	}
	line := logs.find(t, "Admission handler panicked")
	if line["error"] != want || !strings.Contains(fmt.Sprint(line["stacktrace"]), "webhook_test.go") || line["requestID"] != "705ab4f5-6393-11e8-b7cc-42010a800002" {
		t.Errorf("panic log line %v", line)
	}
	// The next request is served.
	if _, r := decoded(t, send(a, http.MethodPost, "application/json", bytes.NewReader(reviewOf("CREATE", "apps", "{}", "")))); !r.Allowed {
		t.Fatalf("after a panic: %+v", r.Result)
	}
}

// panicsTotal reads controller_runtime_webhook_panics_total from controller-runtime's registry.
func panicsTotal(t *testing.T) float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "controller_runtime_webhook_panics_total" && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no controller_runtime_webhook_panics_total")
	return 0
}

// TestAdmissionHTTPLoggerInContext: the handler finds, with log.FromContext, a logger carrying
// who asked what about which object.
func TestAdmissionHTTPLoggerInContext(t *testing.T) {
	t.Parallel()
	logs := &logLines{}
	a := &Webhook{Log: logs.logger().WithName("admission"), Handler: admission.HandlerFunc(func(ctx context.Context, _ admission.Request) admission.Response {
		ctrllog.FromContext(ctx).Info("From the handler", "extra", 1)
		return admission.Allowed("")
	})}
	decoded(t, send(a, http.MethodPost, "application/json", bytes.NewReader(reviewOf("UPDATE", "apps", "{}", ""))))
	line := logs.find(t, "From the handler")
	for k, want := range map[string]any{
		"logger": "admission", "requestID": "705ab4f5-6393-11e8-b7cc-42010a800002", "kind": "Pod", "namespace": "apps", "name": "web-1",
		"operation": "UPDATE", "user": "system:serviceaccount:kube-system:replicaset-controller", "extra": 1.0,
	} {
		if line[k] != want {
			t.Errorf("%s = %v (%T), want %v", k, line[k], line[k], want)
		}
	}
}

// logLines collects a logger's lines as JSON objects.
type logLines struct {
	mu    sync.Mutex
	lines []map[string]any
}

func (l *logLines) logger() logr.Logger {
	return funcr.NewJSON(func(obj string) {
		var m map[string]any
		if err := json.Unmarshal([]byte(obj), &m); err != nil {
			m = map[string]any{"msg": "undecodable line " + obj}
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		l.lines = append(l.lines, m)
	}, funcr.Options{})
}

func (l *logLines) find(t *testing.T, msg string) map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.lines {
		if m["msg"] == msg {
			return m
		}
	}
	t.Fatalf("no log line %q in %v", msg, l.lines)
	return nil
}

// BenchmarkAdmission compares the adapters on the load test's pod, with a handler that only
// allows (the adapter's own cost) and with pullgate's (the offline policy: no registry).
func BenchmarkAdmission(b *testing.B) {
	body := reviewOf("CREATE", "apps", loadPod, "")
	allow := admission.HandlerFunc(func(context.Context, admission.Request) admission.Response { return admission.Allowed("") })
	pullgate := testHandler(b)
	logger := testLogger(io.Discard)
	for _, h := range []struct {
		name string
		h    admission.Handler
	}{{"allow", allow}, {"pullgate", pullgate}} {
		for _, a := range []struct {
			name string
			h    http.Handler
		}{
			{"controller-runtime", &admission.Webhook{Handler: h.h, RecoverPanic: new(true)}},
			{"admissionhttp", &Webhook{Handler: h.h, Log: logger.WithName("admission")}},
		} {
			b.Run(h.name+"/"+a.name, func(b *testing.B) {
				b.ReportAllocs()
				b.SetBytes(int64(len(body)))
				rd := bytes.NewReader(body)
				for b.Loop() {
					rd.Reset(body)
					r := httptest.NewRequest(http.MethodPost, mutatePath, rd)
					r.Header.Set("Content-Type", "application/json")
					w := httptest.NewRecorder()
					a.h.ServeHTTP(w, r)
					if w.Code != http.StatusOK {
						b.Fatal(w.Code)
					}
				}
			})
		}
	}
}

// TestAdmissionTricklingBody: a client that sends headers and then trickles (or withholds) its
// body gets an error answer once the read deadline passes, instead of holding a connection and a
// goroutine for as long as it likes.
func TestAdmissionTricklingBody(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(&Webhook{Handler: testHandler(t), Log: logr.Discard(), ReadTimeout: 200 * time.Millisecond})
	t.Cleanup(srv.Close)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "POST /mutate-v1-pod HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"apiVersion\":"); err != nil {
		t.Fatal(err)
	}
	// A generous bound: the deadline is 200ms; without it the read would block until the test's
	// own timeout.
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a withheld body: %v", err)
	}
	defer resp.Body.Close()
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&review); err != nil || review.Response == nil || review.Response.Allowed || review.Response.Result.Code != http.StatusBadRequest {
		t.Fatalf("answer %+v, err %v", review.Response, err)
	}
}

// TestBodyBuffersAreNotAliased: bodies are read into recycled buffers, so nothing a handler is
// given may point into one. A request kept from one call must read the same after later calls
// have reused its buffer.
func TestBodyBuffersAreNotAliased(t *testing.T) {
	t.Parallel()
	var kept []admission.Request
	a := &Webhook{Log: logr.Discard(), Handler: admission.HandlerFunc(func(_ context.Context, req admission.Request) admission.Response {
		kept = append(kept, req)
		return admission.Allowed("")
	})}
	review := func(ns string) []byte {
		return reviewOf("UPDATE", ns, loadPod, `,"oldObject":`+loadPod+`,"options":{"kind":"UpdateOptions","fieldManager":"`+ns+`"}`)
	}
	for _, ns := range []string{"aaaaaaaa", "bbbbbbbb", "cccccccc"} {
		if w := send(a, http.MethodPost, "application/json", bytes.NewReader(review(ns))); w.Code != http.StatusOK {
			t.Fatalf("%s: HTTP %d", ns, w.Code)
		}
	}
	first := kept[0]
	if first.Namespace != "aaaaaaaa" || !bytes.Contains(first.Options.Raw, []byte(`"fieldManager":"aaaaaaaa"`)) || first.UserInfo.Username == "" {
		t.Errorf("the first request changed after its buffer was reused: namespace %q, options %s", first.Namespace, first.Options.Raw)
	}
	want, _, err := Decode(review("aaaaaaaa"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(first, want) {
		t.Errorf("the first request changed after its buffer was reused:\n%+v\nwant %+v", first, want)
	}
}

// TestAnswerLength: an answer longer than net/http's 2 KiB buffer (a pod of many containers)
// goes out with its length, in one piece, not chunked.
func TestAnswerLength(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(&Webhook{Handler: testHandler(t), Log: logr.Discard()})
	t.Cleanup(srv.Close)
	containers := make([]string, 30)
	for i := range containers {
		containers[i] = fmt.Sprintf(`{"name":"c%d","image":"nginx:1.%d"}`, i, i)
	}
	pod := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[` + strings.Join(containers, ",") + `]}}`
	resp, err := http.Post(srv.URL+mutatePath, "application/json", bytes.NewReader(reviewOf("CREATE", "apps", pod, "")))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if len(body) <= 2048 || resp.ContentLength != int64(len(body)) || len(resp.TransferEncoding) > 0 {
		t.Errorf("%d bytes answered with Content-Length %d and Transfer-Encoding %v; want over 2 KiB, its length, not chunked", len(body), resp.ContentLength, resp.TransferEncoding)
	}
}
