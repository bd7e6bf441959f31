package kjson_test

import (
	"encoding/json"
	"testing"

	jsonv2 "github.com/go-json-experiment/json"
	jsonv1 "github.com/go-json-experiment/json/v1"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pullgate/pullgate/internal/kjson"
)

// The hand-written encoders are kept only while they beat json/v2 (go-json-experiment/json,
// encoding/json/v2 from Go 1.27) by a margin worth their tests and fuzzers. Each benchmark runs
// the hand-written encoder, json/v2's Marshal with its defaults (not byte-compatible: no HTML
// escaping, other omitempty rules), json/v2 with v1 options (byte-compatible with what the API
// machinery and controller-runtime write) and encoding/json.

// warmPatch is what a warm admission of the load test's pod patches: image, pull policy and a
// pull secret.
func warmPatch() []jsonpatch.JsonPatchOperation {
	return []jsonpatch.JsonPatchOperation{
		jsonpatch.NewOperation("replace", "/spec/containers/0/image", "mirror.example.com/hub/library/nginx:1.27@sha256:b73f3f2bc0815a21fbd680a52b090d2dfb3fce64a93dccc8bd59b9c6727148ba"),
		jsonpatch.NewOperation("add", "/spec/containers/0/imagePullPolicy", "IfNotPresent"),
		jsonpatch.NewOperation("add", "/spec/imagePullSecrets", []corev1.LocalObjectReference{{Name: "mirror-pull"}}),
	}
}

func warmReview(b *testing.B) admissionv1.AdmissionReview {
	patch, err := kjson.EncodePatch(warmPatch())
	if err != nil {
		b.Fatal(err)
	}
	resp := admission.Allowed("enforce")
	resp.UID = "705ab4f5-6393-11e8-b7cc-42010a800002"
	resp.Patch, resp.PatchType = patch, new(admissionv1.PatchTypeJSONPatch)
	resp.AuditAnnotations = map[string]string{
		"mode":             "enforce",
		"changes-0a1b2c3d": "rewrite spec.containers[0].image: nginx:1.27 -> mirror.example.com/hub/library/nginx:1.27; pin ...",
	}
	return admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Response: &resp.AdmissionResponse,
	}
}

func BenchmarkReview(b *testing.B) {
	review := warmReview(b)
	benchEncoders(b, review, func(buf []byte) ([]byte, error) { return kjson.AppendReview(buf, review) })
}

func BenchmarkPatch(b *testing.B) {
	ops := warmPatch()
	benchEncoders(b, ops, func([]byte) ([]byte, error) { return kjson.EncodePatch(ops) })
}

func BenchmarkString(b *testing.B) {
	s := "spec.containers[0].image: registry unavailable, \"nginx:1.27\" pinned to the last known digest sha256:b73f3f2bc0815a21fbd680a52b090d2dfb3fce64a93dccc8bd59b9c6727148ba"
	benchEncoders(b, s, func(buf []byte) ([]byte, error) { return kjson.AppendString(buf, s), nil })
}

func benchEncoders(b *testing.B, v any, hand func([]byte) ([]byte, error)) {
	v1options := jsonv1.DefaultOptionsV1()
	encoders := []struct {
		name string
		enc  func(buf []byte) ([]byte, error)
	}{
		{"hand", hand},
		{"jsonv2", func([]byte) ([]byte, error) { return jsonv2.Marshal(v) }},
		{"jsonv2-v1options", func([]byte) ([]byte, error) { return jsonv2.Marshal(v, v1options) }},
		{"encoding-json", func([]byte) ([]byte, error) { return json.Marshal(v) }},
	}
	for _, e := range encoders {
		b.Run(e.name, func(b *testing.B) {
			b.ReportAllocs()
			buf := make([]byte, 0, 4096)
			for b.Loop() {
				if _, err := e.enc(buf[:0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
