package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/pullgate/pullgate/internal/podfixture"
)

// review renders AdmissionReview request bodies for a pod with n containers. The JSON is
// marshalled once with placeholders and then only concatenated, so that making a body costs
// the load generator next to nothing: it shares the cores with the webhook it measures.
type review struct {
	parts [][]byte // text between placeholders: uid, image 0, image 1, ...
	n     int
}

const placeholder = "@@PULLGATE-LOAD@@"

func newReview(containers int) (*review, error) {
	images := make([]string, containers)
	for i := range images {
		images[i] = placeholder
	}
	raw, err := json.Marshal(podfixture.Defaulted(images))
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:             placeholder,
			Kind:            metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:        metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			RequestKind:     &metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			RequestResource: &metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace:       "apps",
			Operation:       admissionv1.Create,
			UserInfo: authenticationv1.UserInfo{
				Username: "system:serviceaccount:kube-system:replicaset-controller",
				UID:      "0d4c3a57-5c1c-4d0e-9a43-1f4e3b0a7c21",
				Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"},
			},
			Object:  runtime.RawExtension{Raw: raw},
			DryRun:  new(false),
			Options: runtime.RawExtension{Raw: []byte(`{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}`)},
		},
	})
	if err != nil {
		return nil, err
	}
	parts := bytes.Split(body, []byte(placeholder))
	if len(parts) != containers+2 {
		return nil, fmt.Errorf("review template: %d placeholders, want %d", len(parts)-1, containers+1)
	}
	return &review{parts: parts, n: containers}, nil
}

// body renders one request: uid from seq, and one image per container.
func (r *review) body(seq uint64, images ...string) []byte {
	size := 20
	for _, p := range r.parts {
		size += len(p)
	}
	for _, img := range images {
		size += len(img)
	}
	b := make([]byte, 0, size)
	b = append(b, r.parts[0]...)
	b = strconv.AppendUint(b, seq, 10)
	for i, img := range images {
		b = append(b, r.parts[i+1]...)
		b = append(b, img...)
	}
	return append(b, r.parts[len(r.parts)-1]...)
}

// pinned checks a pullgate answer: allowed, and a JSON patch that pins want images to
// digests, without warnings (a warning means an image was left unpinned).
func pinned(want int) func([]byte) error {
	return func(body []byte) error {
		var ar admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &ar); err != nil || ar.Response == nil {
			return fmt.Errorf("not an AdmissionReview response: %.80q", body)
		}
		r := ar.Response
		switch {
		case !r.Allowed:
			return fmt.Errorf("denied: %v", r.Result)
		case len(r.Warnings) > 0:
			return fmt.Errorf("warning: %s", r.Warnings[0])
		}
		// Patch is the JSON patch itself: encoding/json undoes the base64 of a []byte field.
		if n := bytes.Count(r.Patch, []byte("@sha256:")); n != want {
			return fmt.Errorf("%d images pinned, want %d", n, want)
		}
		return nil
	}
}

// allowed checks the floor's answer.
func allowed(body []byte) error {
	var ar admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &ar); err != nil || ar.Response == nil || !ar.Response.Allowed {
		return fmt.Errorf("not an allowing AdmissionReview: %.80q", body)
	}
	return nil
}
