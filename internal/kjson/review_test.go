package kjson_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pullgate/pullgate/internal/kjson"
	"github.com/pullgate/pullgate/internal/kjson/kjsontest"
)

func reviewSameAsMarshal(t *testing.T, review admissionv1.AdmissionReview) {
	t.Helper()
	want, err := json.Marshal(review)
	if err != nil {
		t.Fatal(err)
	}
	prefix := []byte("kept:")
	got, err := kjson.AppendReview(prefix, review)
	if err != nil || !bytes.HasPrefix(got, prefix) || !kjsontest.SameAsMarshal(got[len(prefix):], want) {
		t.Fatalf("AppendReview differs from json.Marshal (%v):\ngot  %s\nwant %s", err, got, want)
	}
}

func TestEncodeReview(t *testing.T) {
	t.Parallel()
	v1 := metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}
	patched := admission.Allowed("enforce").WithWarnings("w1", "spec.containers[0].image: \"<x>\" & \u2028 \xff")
	patched.Patch, patched.PatchType = []byte(`[{"op":"add","path":"/a","value":"b"}]`), new(admissionv1.PatchTypeJSONPatch)
	patched.AuditAnnotations = map[string]string{"mode": "enforce", "changes-0a1b2c3d": "pin x -> y", "rule": "gpu"}
	patched.UID = "705ab4f5-6393-11e8-b7cc-42010a800002"
	denied := admission.Denied("pullgate: cannot pin")
	errored := admission.Errored(http.StatusBadRequest, errors.New("decoding: \"bad\"\nat line 2"))
	withKind := admission.Allowed("")
	withKind.Result.TypeMeta = metav1.TypeMeta{Kind: "Status"}
	withVersion := admission.Allowed("")
	withVersion.Result.TypeMeta = metav1.TypeMeta{APIVersion: "v1"}
	withDetails := admission.Denied("no")
	withDetails.Result.Details = &metav1.StatusDetails{Name: "p"}
	withListMeta := admission.Denied("no")
	withListMeta.Result.ResourceVersion = "7"
	cases := map[string]admissionv1.AdmissionReview{
		"patched with warnings and annotations": {TypeMeta: v1, Response: &patched.AdmissionResponse},
		"denied":                                {TypeMeta: v1, Response: &denied.AdmissionResponse},
		"errored, no type":                      {Response: &errored.AdmissionResponse},
		"only a kind":                           {TypeMeta: metav1.TypeMeta{Kind: "AdmissionReview"}, Response: &withKind.AdmissionResponse},
		"only an apiVersion":                    {TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1beta1"}, Response: &withVersion.AdmissionResponse},
		"no status":                             {TypeMeta: v1, Response: &admissionv1.AdmissionResponse{UID: "u", Allowed: true}},
		"empty lists":                           {TypeMeta: v1, Response: &admissionv1.AdmissionResponse{Warnings: []string{}, AuditAnnotations: map[string]string{}, Patch: []byte{}}},
		"status details":                        {TypeMeta: v1, Response: &withDetails.AdmissionResponse},
		"list metadata":                         {TypeMeta: v1, Response: &withListMeta.AdmissionResponse},
		"no response":                           {TypeMeta: v1},
		"a request":                             {TypeMeta: v1, Request: &admissionv1.AdmissionRequest{UID: "u"}, Response: &denied.AdmissionResponse},
	}
	for name, review := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			reviewSameAsMarshal(t, review)
		})
	}
}

func FuzzEncodeReview(f *testing.F) {
	f.Add("admission.k8s.io/v1", "AdmissionReview", "uid", true, "msg", "reason", int32(200), []byte("[]"), "k", "v", "warning")
	f.Add("", "", "", false, "", "", int32(-1), []byte(nil), "", "", "\xff<\u2028>&\"\\\n")
	f.Fuzz(func(t *testing.T, apiVersion, kind, uid string, allowed bool, message, reason string, code int32, patch []byte, key, value, warning string) {
		r := &admissionv1.AdmissionResponse{
			UID: types.UID(uid), Allowed: allowed, Patch: patch,
			Result:           &metav1.Status{Message: message, Reason: metav1.StatusReason(reason), Code: code, Status: uid},
			AuditAnnotations: map[string]string{key: value, "mode": value, "z" + key: warning},
			Warnings:         []string{warning, value},
		}
		if len(patch) > 0 {
			r.PatchType = new(admissionv1.PatchType(key))
		}
		reviewSameAsMarshal(t, admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}, Response: r})
	})
}
