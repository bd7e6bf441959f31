package admissionhttp

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"sync"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pullgate/pullgate/internal/kjson"
	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/policy"
)

// lastRequest remembers the request the adapter handed to the handler.
type lastRequest struct {
	mu  sync.Mutex
	h   admission.Handler
	req *admission.Request
}

func (l *lastRequest) Handle(ctx context.Context, req admission.Request) admission.Response {
	l.mu.Lock()
	l.req = &req
	l.mu.Unlock()
	return l.h.Handle(ctx, req)
}

// FuzzAdmissionHTTP drives arbitrary bytes through the HTTP adapter the server really uses (the
// entry point for whatever reaches port 9443) and pullgate's Handler: it always answers with an
// AdmissionReview, never panics, and any patch applies to the object it was given, leaves a Pod
// that still decodes, and is not patched again on reinvocation.
func FuzzAdmissionHTTP(f *testing.F) {
	f.Add(reviewJSON(f))
	// The handler fuzzer's corpus covers every operation, subresource and the garbage it found.
	seeds, _ := filepath.Glob("../../pkg/mutate/testdata/fuzz/FuzzHandler/*")
	if len(seeds) == 0 {
		f.Fatal("the FuzzHandler corpus is missing")
	}
	for _, s := range seeds {
		if data, err := os.ReadFile(s); err == nil {
			if v, ok := corpusValue(data); ok {
				f.Add(v)
			}
		}
	}
	pol, err := policy.Check([]byte(offlinePolicy))
	if err != nil {
		f.Fatal(err)
	}
	last := &lastRequest{h: mutate.NewHandler(mutate.Handler{Policy: mutate.StaticPolicy{Policy: pol}, OwnNamespace: "pullgate"})}
	a := &Webhook{Handler: last, Log: logr.Discard()}
	f.Fuzz(func(t *testing.T, body []byte) {
		last.req = nil
		resp := post(t, a, body)
		if len(resp.Patch) == 0 {
			return
		}
		if !resp.Allowed || last.req == nil || resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("patch without an allowed, decoded request and its type: %+v", resp)
		}
		patch, err := jsonpatch.DecodePatch(resp.Patch)
		if err != nil {
			t.Fatalf("patch %s: %v", resp.Patch, err)
		}
		// The object as the API server holds it: the adapter hands the handler the pod decoded,
		// not its bytes.
		var sent admissionv1.AdmissionReview
		if err := kjson.Unmarshal(body, &sent); err != nil || sent.Request == nil || len(sent.Request.Object.Raw) == 0 {
			t.Fatalf("a patch for a review without an object (%v)", err)
		}
		object := sent.Request.Object.Raw
		patched, err := patch.Apply(object)
		if err != nil {
			t.Fatalf("patch does not apply: %v\npatch %s\nobject %s", err, resp.Patch, object)
		}
		// Only a Pod the API server could have sent must stay one; pullgate reads just the image
		// fields, so an object broken elsewhere (a number out of range) is patched as given.
		if json.Unmarshal(object, &corev1.Pod{}) == nil {
			if err := json.Unmarshal(patched, &corev1.Pod{}); err != nil {
				t.Fatalf("patched object is no longer a Pod: %v", err)
			}
		}
		req := *last.req
		req.Object = runtime.RawExtension{Raw: patched}
		if again := last.h.Handle(context.Background(), req); len(again.Patch) != 0 {
			t.Fatalf("own output patched again: %s", again.Patch)
		}
	})
}

func post(t *testing.T, h http.Handler, body []byte) admissionv1.AdmissionResponse {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, mutatePath, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil || review.Response == nil {
		t.Fatalf("answer is not an AdmissionReview (%v): %q", err, rec.Body.String())
	}
	return *review.Response
}

// corpusValue reads a one-value []byte corpus file ("go test fuzz v1").
func corpusValue(data []byte) ([]byte, bool) {
	const prefix = "go test fuzz v1\n[]byte("
	s := string(bytes.TrimSpace(data))
	if len(s) < len(prefix)+1 || s[:len(prefix)] != prefix || s[len(s)-1] != ')' {
		return nil, false
	}
	v, err := strconv.Unquote(s[len(prefix) : len(s)-1])
	if err != nil {
		return nil, false
	}
	return []byte(v), true
}

// FuzzAdmissionMatchesControllerRuntime: whatever JSON the body holds, pullgate's adapter (which
// decodes the pod along with the review, or falls back to raw objects) answers as
// controller-runtime's adapter does on the same Handler: the same response when the review
// decodes, the same refusal code when not. What is not JSON ours refuses, where
// controller-runtime tries YAML (TestAdmissionHTTPRefusals). The envelope's apiVersion and kind
// are compared by TestAdmissionHTTPMatchesControllerRuntime only: for envelopes the API server
// never sends (apiVersion "/", keys in another case) controller-runtime echoes its own reading.
func FuzzAdmissionMatchesControllerRuntime(f *testing.F) {
	f.Add(reviewJSON(f))
	f.Add(reviewOf("UPDATE", "apps", loadPod, `,"oldObject":`+loadPod))
	f.Add(reviewOf("CREATE", "apps", loadPod, `,"object":null`))
	h := testHandler(f)
	ours := &Webhook{Handler: h, Log: logr.Discard()}
	theirs := controllerRuntime(h)
	f.Fuzz(func(t *testing.T, body []byte) {
		got := send(ours, http.MethodPost, "application/json", bytes.NewReader(body))
		if !json.Valid(body) {
			if _, g := decoded(t, got); g.Allowed || resultCode(g) != http.StatusBadRequest {
				t.Fatalf("not JSON, yet allowed=%v code=%d", g.Allowed, resultCode(g))
			}
			return
		}
		want := send(theirs, http.MethodPost, "application/json", bytes.NewReader(body))
		_, g := decoded(t, got)
		_, w := decoded(t, want)
		if w.Allowed || resultCode(w) != http.StatusBadRequest {
			if !reflect.DeepEqual(g, w) {
				t.Fatalf("answers differ\nours:               %.600s\ncontroller-runtime: %.600s", got.Body, want.Body)
			}
			return
		}
		if g.Allowed || resultCode(g) != resultCode(w) {
			t.Fatalf("ours allowed=%v code=%d, controller-runtime allowed=%v code=%d (%s)", g.Allowed, resultCode(g), w.Allowed, resultCode(w), w.Result.Message)
		}
	})
}
