package kjson

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strconv"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AppendReview appends an answering AdmissionReview to b, byte for byte as json.Marshal writes
// it, without reflection (BenchmarkReview has the figures). It writes what a handler's answer
// holds; anything else (a request, status details, list metadata) goes through json.Marshal.
func AppendReview(b []byte, review admissionv1.AdmissionReview) ([]byte, error) {
	r := review.Response
	if review.Request != nil || r == nil || (r.Result != nil && (r.Result.Details != nil || r.Result.ListMeta != (metav1.ListMeta{}))) {
		raw, err := json.Marshal(review)
		return append(b, raw...), err
	}
	// What the members' names and punctuation take, plus the values: one allocation at most.
	size := 320 + len(review.Kind) + len(review.APIVersion) + len(r.UID) + base64.StdEncoding.EncodedLen(len(r.Patch))
	if r.Result != nil {
		size += len(r.Result.Message)
	}
	for k, v := range r.AuditAnnotations {
		size += len(k) + len(v) + 8
	}
	for _, w := range r.Warnings {
		size += len(w) + 4
	}
	b = slices.Grow(b, size)
	start := len(b)
	b = append(b, '{')
	b = appendTypeMeta(b, review.TypeMeta)
	if len(b) > start+1 {
		b = append(b, ',')
	}
	b = append(b, `"response":{"uid":`...)
	b = AppendString(b, string(r.UID))
	b = append(append(b, `,"allowed":`...), strconv.FormatBool(r.Allowed)...)
	if s := r.Result; s != nil {
		b = append(b, `,"status":{`...)
		b = appendTypeMeta(b, s.TypeMeta)
		if s.TypeMeta != (metav1.TypeMeta{}) {
			b = append(b, ',')
		}
		b = append(b, `"metadata":{}`...) // encoding/json never omits a struct
		b = appendMember(b, "status", s.Status)
		b = appendMember(b, "message", s.Message)
		b = appendMember(b, "reason", string(s.Reason))
		if s.Code != 0 {
			b = strconv.AppendInt(append(b, `,"code":`...), int64(s.Code), 10)
		}
		b = append(b, '}')
	}
	if len(r.Patch) > 0 {
		b = append(b, `,"patch":"`...)
		b = base64.StdEncoding.AppendEncode(b, r.Patch)
		b = append(b, '"')
	}
	if r.PatchType != nil {
		b = AppendString(append(b, `,"patchType":`...), string(*r.PatchType))
	}
	if len(r.AuditAnnotations) > 0 {
		b = append(b, `,"auditAnnotations":{`...)
		keys := make([]string, 0, len(r.AuditAnnotations))
		for k := range r.AuditAnnotations {
			keys = append(keys, k)
		}
		slices.Sort(keys) // encoding/json sorts map keys
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = AppendString(append(AppendString(b, k), ':'), r.AuditAnnotations[k])
		}
		b = append(b, '}')
	}
	if len(r.Warnings) > 0 {
		b = append(b, `,"warnings":[`...)
		for i, w := range r.Warnings {
			if i > 0 {
				b = append(b, ',')
			}
			b = AppendString(b, w)
		}
		b = append(b, ']')
	}
	return append(b, "}}"...), nil
}

// appendTypeMeta writes kind and apiVersion, each when set, with no comma around them.
func appendTypeMeta(b []byte, t metav1.TypeMeta) []byte {
	if t.Kind != "" {
		b = AppendString(append(b, `"kind":`...), t.Kind)
	}
	if t.APIVersion != "" {
		if t.Kind != "" {
			b = append(b, ',')
		}
		b = AppendString(append(b, `"apiVersion":`...), t.APIVersion)
	}
	return b
}

// appendMember writes ,"name":value when value is set (omitempty).
func appendMember(b []byte, name, value string) []byte {
	if value == "" {
		return b
	}
	return AppendString(append(append(append(b, `,"`...), name...), `":`...), value)
}
