package kjson_test

import (
	"encoding/json"
	"testing"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"

	"github.com/pullgate/pullgate/internal/kjson"
	"github.com/pullgate/pullgate/internal/kjson/kjsontest"
)

// patchSameAsMarshal fails the test unless EncodePatch writes ops exactly as json.Marshal does.
func patchSameAsMarshal(t *testing.T, ops []jsonpatch.JsonPatchOperation) {
	t.Helper()
	want, wantErr := json.Marshal(ops)
	got, err := kjson.EncodePatch(ops)
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("error %v, json.Marshal's %v", err, wantErr)
	}
	if !kjsontest.SameAsMarshal(got, want) {
		t.Fatalf("EncodePatch differs from json.Marshal:\ngot  %s\nwant %s", got, want)
	}
}

func TestEncodePatch(t *testing.T) {
	t.Parallel()
	ref := func(n string) corev1.LocalObjectReference { return corev1.LocalObjectReference{Name: n} }
	cases := map[string][]jsonpatch.JsonPatchOperation{
		"empty": nil,
		"what pullgate writes": {
			jsonpatch.NewOperation("replace", "/spec/containers/0/image", "mirror.example.com/hub/library/nginx:1.27@sha256:b73f3f2bc0815a21fbd680a52b090d2dfb3fce64a93dccc8bd59b9c6727148ba"),
			jsonpatch.NewOperation("add", "/spec/containers/0/imagePullPolicy", "IfNotPresent"),
			jsonpatch.NewOperation("add", "/spec/imagePullSecrets", []corev1.LocalObjectReference{ref("a"), ref("b")}),
			jsonpatch.NewOperation("add", "/spec/imagePullSecrets/-", ref("c")),
		},
		"escapes": {
			jsonpatch.NewOperation("replace", "/a~1b/c~0d", "q\"b\\s/ <x>&y \x00\x01\x1f\x7f \b\f\n\r\t \u2028\u2029 é 🙂 \xff\xfe ok"),
			jsonpatch.NewOperation("add", "/spec/imagePullSecrets/-", ref("<&>\"")),
		},
		"empty strings and references": {
			jsonpatch.NewOperation("add", "", ""),
			jsonpatch.NewOperation("add", "/spec/imagePullSecrets", []corev1.LocalObjectReference{}),
			jsonpatch.NewOperation("add", "/spec/imagePullSecrets", []corev1.LocalObjectReference{ref("")}),
			jsonpatch.NewOperation("add", "/spec/imagePullSecrets/-", ref("")),
		},
		"nil values":       {{Operation: "add", Path: "/a"}, {Operation: "replace", Path: "/b"}, {Operation: "remove", Path: "/c"}},
		"a typed nil list": {jsonpatch.NewOperation("add", "/a", []corev1.LocalObjectReference(nil))},
		"maps": {
			jsonpatch.NewOperation("add", "/a", map[string]string{"name": "x"}), jsonpatch.NewOperation("add", "/b", []map[string]string{{"name": "y"}}),
			jsonpatch.NewOperation("add", "/metadata/annotations", map[string]string{"pullgate.dev/original": `{"generation":"g","images":{"spec.containers[0].image":"nginx"}}`}),
			jsonpatch.NewOperation("add", "/c", map[string]string{"z": "1", "a": "<\u2028\xff", "m": "", "": "e"}),
			jsonpatch.NewOperation("add", "/d", map[string]string{}), jsonpatch.NewOperation("add", "/e", map[string]string(nil)),
		},
		"other values":            {jsonpatch.NewOperation("add", "/a", 3), jsonpatch.NewOperation("add", "/b", map[string]any{"k": []int{1}})},
		"an unmarshallable value": {jsonpatch.NewOperation("add", "/a", func() {})},
	}
	for name, ops := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			patchSameAsMarshal(t, ops)
		})
	}
}

func FuzzEncodePatch(f *testing.F) {
	f.Add("replace", "/spec/containers/0/image", "mirror.example.com/hub/nginx:1@sha256:00", "mirror-pull")
	f.Add("add", "/x", "<\u2028\xff\"\\\n", "\x00")
	f.Fuzz(func(t *testing.T, op, path, value, secret string) {
		patchSameAsMarshal(t, []jsonpatch.JsonPatchOperation{
			jsonpatch.NewOperation(op, path, value),
			jsonpatch.NewOperation(op, path, corev1.LocalObjectReference{Name: secret}),
			jsonpatch.NewOperation(op, path, []corev1.LocalObjectReference{{Name: secret}, {Name: value}}),
			jsonpatch.NewOperation(op, path, map[string]string{value: secret, secret: value, path: op}),
		})
	})
}
