package kjson

import (
	"reflect"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsjson "sigs.k8s.io/json"
)

// view has the shapes pkg/mutate decodes a pod into: an inlined TypeMeta, a map, slices of
// structs, a pointer to a struct, named string types.
type view struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        struct {
		Name        string            `json:"name"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		Containers []struct {
			Name            string            `json:"name"`
			Image           string            `json:"image"`
			ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy"`
		} `json:"containers"`
		Volumes []struct {
			Name  string                    `json:"name"`
			Image *corev1.ImageVolumeSource `json:"image"`
		} `json:"volumes"`
		ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets"`
	} `json:"spec"`
}

const review = `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1",` +
	`"kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},` +
	`"namespace":"apps","operation":"CREATE","userInfo":{"username":"u","groups":["g"],"extra":{"k":["v"]}},` +
	`"object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{"a":"b"}},` +
	`"spec":{"containers":[{"name":"c","image":"nginx:1","imagePullPolicy":"Always","env":[{"name":"X","value":"1"}]}],` +
	`"volumes":[{"name":"v","image":{"reference":"busybox","pullPolicy":"Never"}},{"name":"e","emptyDir":{}}],` +
	`"imagePullSecrets":[{"name":"s"}]}},"dryRun":false,"options":{"kind":"CreateOptions"}}}`

// decodeBoth decodes doc with kjson and with the API machinery's case-sensitive decoder, into a
// review and into a pod view, and fails the test where the two disagree.
func decodeBoth(t *testing.T, doc []byte) {
	t.Helper()
	for _, target := range []func() any{
		func() any { return new(admissionv1.AdmissionReview) },
		func() any { return new(view) },
	} {
		ours, theirs := target(), target()
		errOurs := Unmarshal(doc, ours)
		errTheirs := sigsjson.UnmarshalCaseSensitivePreserveInts(doc, theirs)
		if (errOurs == nil) != (errTheirs == nil) {
			t.Fatalf("%T from %.200q: kjson error %v, API machinery error %v", ours, doc, errOurs, errTheirs)
		}
		if errOurs == nil && !reflect.DeepEqual(ours, theirs) {
			t.Fatalf("%T from %.200q decoded differently:\nkjson:          %+v\nAPI machinery:  %+v", ours, doc, ours, theirs)
		}
	}
}

func TestMatchesAPIMachinery(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"a review":                      review,
		"keys in another case":          strings.Replace(strings.Replace(review, `"uid"`, `"UID"`, 1), `"image":"nginx:1"`, `"Image":"nginx:1"`, 1),
		"duplicate keys, the last wins": strings.Replace(review, `"name":"c",`, `"name":"c","image":"first","name":"d",`, 1),
		"duplicate request, then null":  strings.TrimSuffix(review, "}") + `,"request":null}`,
		"invalid UTF-8":                 strings.Replace(review, "nginx:1", "ngin\xff\xfex:1", 1),
		"escaped NUL":                   strings.Replace(review, "nginx:1", `nginx\u0000:1`, 1),
		"escaped surrogate halves":      strings.Replace(review, "nginx:1", `\ud800x\udc00`, 1),
		"raw NUL":                       strings.Replace(review, "nginx:1", "nginx\x00:1", 1),
		"object null":                   strings.Replace(review, `"object":{`, `"object":null,"x":{`, 1),
		"unknown members":               strings.Replace(review, `"dryRun":false`, `"x":{"y":[1,2.5e3,true,null,"z"]},"dryRun":false`, 1),
		"wrong type":                    strings.Replace(review, `"dryRun":false`, `"dryRun":"no"`, 1),
		"image not a string":            strings.Replace(review, `"image":"nginx:1"`, `"image":{"$ne":""}`, 1),
		"number for a string":           strings.Replace(review, `"name":"p"`, `"name":7`, 1),
		"annotations null":              strings.Replace(review, `"annotations":{"a":"b"}`, `"annotations":null`, 1),
		"trailing data":                 review + ` {}`,
		"leading and trailing space":    " \n\t" + review + " \r\n",
		"deep nesting":                  strings.Replace(review, `"dryRun":false`, `"x":`+strings.Repeat("[", 20000)+strings.Repeat("]", 20000)+`,"dryRun":false`, 1),
		"truncated":                     review[:len(review)/2],
		"empty":                         "",
		"a list":                        "[]",
		"null":                          "null",
	}
	for name, doc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			decodeBoth(t, []byte(doc))
		})
	}
}

// FuzzMatchesAPIMachinery: whatever the bytes, kjson accepts what the API machinery's decoder
// accepts and decodes it to the same values.
func FuzzMatchesAPIMachinery(f *testing.F) {
	f.Add([]byte(review))
	f.Add([]byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"nginx"}]}}`))
	f.Add([]byte(`{"request":{"object":{"spec":{"volumes":[{"name":"v","image":null}]}}}}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		decodeBoth(t, doc)
	})
}
