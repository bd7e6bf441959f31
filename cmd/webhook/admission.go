package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	admissionmetrics "sigs.k8s.io/controller-runtime/pkg/webhook/admission/metrics"

	"github.com/pullgate/pullgate/internal/kjson"
	"github.com/pullgate/pullgate/pkg/mutate"
)

// maxReviewSize is controller-runtime's limit, for the same reason: an AdmissionReview holds at
// most two objects (the new and the old one) of at most 3 MiB each, as etcd takes 1.5 MiB and
// JSON may double that, plus less than 1 MiB for the rest. A body of this size or more is
// refused (the limit is exclusive, as controller-runtime's is).
const maxReviewSize = 7 << 20

// admissionHTTP serves AdmissionReviews for an admission.Handler, in place of controller-runtime's
// admission.Webhook. That one parses every body twice (the universal deserializer sniffs the
// version, then decodes) and builds its per-request logger through the global delegating
// logger: under warm load, a third of an admission's CPU. This adapter decodes once, the pod
// included (decodeReview), accepting what the same case-sensitive decoder accepts, and answers
// the same: HTTP 200 and a review whatever happens, errors as allowed=false with the code
// inside, the request's apiVersion and kind echoed (FuzzAdmissionMatchesControllerRuntime).
// Unlike it, it serves POST only.
//
// It is registered on controller-runtime's webhook.Server, which keeps serving TLS, reloading
// the certificate and instrumenting the path with the controller_runtime_webhook_* metrics.
type admissionHTTP struct {
	handler admission.Handler
	// log is the base of every request's logger; the request's identity is added to it.
	log logr.Logger
	// readTimeout bounds reading one body; zero means bodyReadTimeout.
	readTimeout time.Duration
}

var _ http.Handler = (*admissionHTTP)(nil)

// bodyReadTimeout bounds reading one review body: far more than a 7 MiB body needs on any
// network the API server uses, far less than a trickling client would like.
const bodyReadTimeout = 10 * time.Second

func (a *admissionHTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		a.fail(w, http.StatusMethodNotAllowed, fmt.Errorf("method %s, expected POST", r.Method))
		return
	}
	if r.Body == nil || r.Body == http.NoBody {
		a.fail(w, http.StatusBadRequest, errors.New("request body is empty"))
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		a.fail(w, http.StatusBadRequest, fmt.Errorf("contentType=%s, expected application/json", ct))
		return
	}
	// The API server sends a review in one go; a client that trickles its body must not hold a
	// connection and a handler goroutine for long (the server's own limit is on headers only).
	// Not every ResponseWriter supports deadlines (httptest's recorder); the limit is best effort.
	timeout := a.readTimeout
	if timeout == 0 {
		timeout = bodyReadTimeout
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(timeout))
	buf := getBody()
	defer putBody(buf)
	body, err := readReview(buf, r.Body, r.ContentLength)
	if err != nil {
		code := int32(http.StatusBadRequest)
		if errors.Is(err, errTooLarge) {
			code = http.StatusRequestEntityTooLarge
		}
		a.fail(w, code, err)
		return
	}

	req, typ, err := decodeReview(body)
	if err != nil {
		a.fail(w, http.StatusBadRequest, fmt.Errorf("decoding the AdmissionReview: %w", err))
		return
	}
	// Plain strings: zap encodes any other type (types.UID, admissionv1.Operation) by reflection.
	log := withLazyValues(a.log, "requestID", string(req.UID), "kind", req.Kind.Kind, "namespace", req.Namespace,
		"name", req.Name, "operation", string(req.Operation), "user", req.UserInfo.Username)
	resp := a.handle(ctrllog.IntoContext(r.Context(), log), log, req)

	// The answer carries the request's apiVersion and kind, so an API server that allows several
	// review versions gets the one it sent; v1 when the request named none.
	if typ == (metav1.TypeMeta{}) {
		typ = metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "AdmissionReview"}
	}
	a.write(w, log, admissionv1.AdmissionReview{TypeMeta: typ, Response: &resp.AdmissionResponse})
}

// podReview is an AdmissionReview whose objects are decoded into the fields pullgate reads in
// the same pass as the review (mutate.DecodedObject); the embedded request's RawExtensions are
// shadowed.
type podReview struct {
	metav1.TypeMeta `json:",inline"`
	Request         *podRequest `json:"request,omitempty"`
}

type podRequest struct {
	admissionv1.AdmissionRequest
	Object    mutate.DecodedObject `json:"object"`
	OldObject mutate.DecodedObject `json:"oldObject"`
}

// decodeReview decodes a review into the v1 type whatever version it declares, as
// controller-runtime does (v1beta1 has the same fields), accepting what the API machinery's
// case-sensitive decoder accepts (see internal/kjson). A review without a request gives the
// handler an empty request, as controller-runtime's does; a request member given twice is
// merged into one, as there (both decode into the request already allocated).
//
// The pod is decoded along with the review, where it can be (see mutate.DecodedObject); any
// review that cannot is decoded again with the objects kept raw, so that every answer, errors
// included, is the one the raw path gives.
func decodeReview(body []byte) (admission.Request, metav1.TypeMeta, error) {
	var pr podRequest
	review := podReview{Request: &pr}
	if kjson.Unmarshal(body, &review) == nil {
		req := admission.Request{AdmissionRequest: pr.AdmissionRequest}
		if pr.Object.Seen() {
			req.Object.Object = &pr.Object
		}
		if pr.OldObject.Seen() {
			req.OldObject.Object = &pr.OldObject
		}
		return req, review.TypeMeta, nil
	}
	var req admission.Request
	raw := admissionv1.AdmissionReview{Request: &req.AdmissionRequest}
	err := kjson.Unmarshal(body, &raw)
	return req, raw.TypeMeta, err
}

// handle runs the handler and completes its response (uid, status code, the patch marshalled).
// A panic becomes a 500 answer for this request instead of a dropped connection.
func (a *admissionHTTP) handle(ctx context.Context, log logr.Logger, req admission.Request) (resp admission.Response) {
	defer func() {
		if p := recover(); p != nil {
			admissionmetrics.WebhookPanics.WithLabelValues().Inc()
			err := fmt.Errorf("panic: %v [recovered]", p)
			log.Error(err, "Admission handler panicked", "stacktrace", string(debug.Stack()))
			resp = admission.Errored(http.StatusInternalServerError, err)
			resp.UID = req.UID
		}
	}()
	resp = a.handler.Handle(ctx, req)
	if err := resp.Complete(req); err != nil {
		log.Error(err, "Encoding the admission response")
		resp = admission.Errored(http.StatusInternalServerError, errors.New("unable to encode response"))
		resp.UID = req.UID
	}
	return resp
}

// fail answers a request that could not be decoded: a review without apiVersion and kind, as
// controller-runtime's, so the API server counts it as a failed call (its failurePolicy
// applies), not as a denial.
func (a *admissionHTTP) fail(w http.ResponseWriter, code int32, err error) {
	a.log.Error(err, "Bad admission request", "code", code)
	resp := admission.Errored(code, err)
	a.write(w, a.log, admissionv1.AdmissionReview{Response: &resp.AdmissionResponse})
}

func (a *admissionHTTP) write(w http.ResponseWriter, log logr.Logger, review admissionv1.AdmissionReview) {
	buf := getBody() // a recycled buffer holds the answer until it is written
	defer putBody(buf)
	b, err := kjson.AppendReview(buf.AvailableBuffer(), review)
	if err != nil {
		// Not expected: every field of a review marshals. Still an answer, not a silence.
		log.Error(err, "Encoding the AdmissionReview")
		resp := admission.Errored(http.StatusInternalServerError, errors.New("unable to encode response"))
		resp.UID = review.Response.UID
		b, _ = json.Marshal(admissionv1.AdmissionReview{Response: &resp.AdmissionResponse})
	}
	w.Header().Set("Content-Type", "application/json")
	if _, err := w.Write(append(b, '\n')); err != nil {
		log.Error(err, "Writing the AdmissionReview")
	}
}

var errTooLarge = fmt.Errorf("request entity is too large; limit is %d bytes", maxReviewSize)

// preallocCap bounds the buffer allocated on the word of Content-Length: a client announcing
// 7 MiB and sending nothing must not cost 7 MiB per connection. A pod's review is a few KiB;
// a larger one grows its buffer as its bytes arrive.
const preallocCap = 64 << 10

// bodies recycles the buffers bodies are read into and answers written from: the body was a
// third of the bytes a warm admission allocates, and so of its garbage collection. Nothing
// decoded from a body refers to it (strings and raw objects are copies), so its buffer is
// reused once the answer is written. One grown past preallocCap by a large pod is left to the
// collector instead.
var bodies = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBody() *bytes.Buffer { return bodies.Get().(*bytes.Buffer) }

func putBody(buf *bytes.Buffer) {
	if buf.Cap() <= preallocCap+bytes.MinRead {
		buf.Reset()
		bodies.Put(buf)
	}
}

// readReview reads the body into buf (empty) up to maxReviewSize, for a typical pod in one go,
// sized from Content-Length (io.ReadAll would grow and copy its buffer a few times).
func readReview(buf *bytes.Buffer, body io.Reader, length int64) ([]byte, error) {
	if length > 0 {
		buf.Grow(int(min(length, preallocCap)) + bytes.MinRead)
	}
	n, err := buf.ReadFrom(io.LimitReader(body, maxReviewSize))
	if err != nil {
		return nil, fmt.Errorf("reading the request body: %w", err)
	}
	if n >= maxReviewSize {
		return nil, errTooLarge
	}
	if n == 0 {
		return nil, errors.New("request body is empty")
	}
	return buf.Bytes(), nil
}
