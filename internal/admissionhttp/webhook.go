package admissionhttp

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pullgate/pullgate/internal/kjson"
)

// Webhook stands in for controller-runtime's admission.Webhook, which parses every body twice
// and builds each request's logger through the global delegating logger: a third of a warm
// admission's CPU. It answers the same (FuzzAdmissionMatchesControllerRuntime holds it to
// that): HTTP 200 and a review whatever happens, the request's apiVersion and kind echoed.
// Unlike it, it serves POST only. Register it on a webhook.Server, which keeps TLS, certificate
// reloads and the controller_runtime_webhook_* metrics.
type Webhook struct {
	Handler admission.Handler
	// Log is the base of every request's logger; the request's identity is added to it.
	Log logr.Logger
	// ReadTimeout bounds reading one body; zero means bodyReadTimeout.
	ReadTimeout time.Duration
}

var _ http.Handler = (*Webhook)(nil)

// bodyReadTimeout bounds reading one review body: far more than a 7 MiB body needs on any
// network the API server uses, far less than a trickling client would like.
const bodyReadTimeout = 10 * time.Second

func (a *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
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
	timeout := a.ReadTimeout
	if timeout == 0 {
		timeout = bodyReadTimeout
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(timeout))
	buf := getBody()
	defer putBody(buf)
	body, err := ReadBody(buf, r.Body, r.ContentLength)
	if err != nil {
		code := int32(http.StatusBadRequest)
		if errors.Is(err, ErrTooLarge) {
			code = http.StatusRequestEntityTooLarge
		}
		a.fail(w, code, err)
		return
	}

	req, typ, err := Decode(body)
	if err != nil {
		a.fail(w, http.StatusBadRequest, fmt.Errorf("decoding the AdmissionReview: %w", err))
		return
	}
	// Plain strings: zap encodes any other type (types.UID, admissionv1.Operation) by reflection.
	log := withLazyValues(a.Log, "requestID", string(req.UID), "kind", req.Kind.Kind, "namespace", req.Namespace,
		"name", req.Name, "operation", string(req.Operation), "user", req.UserInfo.Username)
	resp := Run(ctrllog.IntoContext(r.Context(), log), a.Handler, req)

	a.write(w, log, Answer(typ, resp))
}

// fail answers a request that could not be decoded: a review without apiVersion and kind, as
// controller-runtime's, so the API server counts it as a failed call (its failurePolicy
// applies), not as a denial.
func (a *Webhook) fail(w http.ResponseWriter, code int32, err error) {
	a.Log.Error(err, "Bad admission request", "code", code)
	resp := admission.Errored(code, err)
	a.write(w, a.Log, admissionv1.AdmissionReview{Response: &resp.AdmissionResponse})
}

func (a *Webhook) write(w http.ResponseWriter, log logr.Logger, review admissionv1.AdmissionReview) {
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
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	// Without a length, net/http sends an answer over its 2 KiB buffer chunked: more writes, and
	// TLS records, for what is one buffer (a pod of many containers, with warnings, passes 2 KiB).
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	if _, err := w.Write(b); err != nil {
		log.Error(err, "Writing the AdmissionReview")
	}
}
