package admissionhttp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	admissionmetrics "sigs.k8s.io/controller-runtime/pkg/webhook/admission/metrics"

	"github.com/pullgate/pullgate/internal/kjson"
	"github.com/pullgate/pullgate/pkg/mutate"
)

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

// Decode decodes a review into the v1 type whatever version it declares, as
// controller-runtime does (v1beta1 has the same fields), accepting what the API machinery's
// case-sensitive decoder accepts (see internal/kjson). A review without a request gives the
// handler an empty request, as controller-runtime's does; a request member given twice is
// merged into one, as there (both decode into the request already allocated).
//
// The pod is decoded along with the review, where it can be (see mutate.DecodedObject); any
// review that cannot is decoded again with the objects kept raw, so that every answer, errors
// included, is the one the raw path gives.
func Decode(body []byte) (admission.Request, metav1.TypeMeta, error) {
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

// Run runs the handler and completes its response (uid, status code, the patch marshalled).
// A panic becomes a 500 answer for this request instead of a dropped connection. It logs to
// ctx's logger.
func Run(ctx context.Context, h admission.Handler, req admission.Request) (resp admission.Response) {
	log := logr.FromContextOrDiscard(ctx)
	defer func() {
		if p := recover(); p != nil {
			admissionmetrics.WebhookPanics.WithLabelValues().Inc()
			err := fmt.Errorf("panic: %v [recovered]", p)
			log.Error(err, "Admission handler panicked", "stacktrace", string(debug.Stack()))
			resp = admission.Errored(http.StatusInternalServerError, err)
			resp.UID = req.UID
		}
	}()
	resp = h.Handle(ctx, req)
	if err := resp.Complete(req); err != nil {
		log.Error(err, "Encoding the admission response")
		resp = admission.Errored(http.StatusInternalServerError, errors.New("unable to encode response"))
		resp.UID = req.UID
	}
	return resp
}

// Answer is the review that carries resp. It has the request's apiVersion and kind, so an API
// server that allows several review versions gets the one it sent; v1 when the request named
// none.
func Answer(typ metav1.TypeMeta, resp admission.Response) admissionv1.AdmissionReview {
	if typ == (metav1.TypeMeta{}) {
		typ = metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "AdmissionReview"}
	}
	return admissionv1.AdmissionReview{TypeMeta: typ, Response: &resp.AdmissionResponse}
}
