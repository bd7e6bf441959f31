package mutate

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
)

// originalOf applies a plan for raw and returns the pod after the patch, and its annotation.
func originalOf(t *testing.T, raw []byte, op admissionv1.Operation, old []byte) (*corev1.Pod, Original) {
	t.Helper()
	pol := mustLoad(t, "testdata/policy.yaml")
	p, err := NewPlan(pol, Input{Operation: op, Namespace: "default", Object: raw, OldObject: old})
	if err != nil {
		t.Fatal(err)
	}
	r := p.Apply(outcomesFor(p, nil))
	_, got := applyPatch(t, raw, r.Patch)
	v, ok := got.Annotations[OriginalAnnotation]
	if !ok {
		return got, Original{}
	}
	o, err := ParseOriginal(v)
	if err != nil {
		t.Fatal(err)
	}
	if o.Policy != pol.Generation() {
		t.Errorf("policy generation %q, want %q", o.Policy, pol.Generation())
	}
	return got, o
}

func TestOriginalAnnotation(t *testing.T) {
	t.Parallel()
	t.Run("records what the author wrote", func(t *testing.T) {
		t.Parallel()
		_, o := originalOf(t, podJSON(t, pod("nginx:1.27")), admissionv1.Create, nil)
		if got := o.Images["spec.containers[0].image"]; got != "nginx:1.27" {
			t.Errorf("original %q, want nginx:1.27 (%+v)", got, o)
		}
	})
	t.Run("pod without metadata", func(t *testing.T) {
		t.Parallel()
		_, o := originalOf(t, []byte(`{"spec":{"containers":[{"name":"c","image":"nginx"}]}}`), admissionv1.Create, nil)
		if o.Images["spec.containers[0].image"] != "nginx" {
			t.Errorf("%+v", o)
		}
	})
	t.Run("reinvocation keeps the first originals", func(t *testing.T) {
		t.Parallel()
		once, _ := originalOf(t, podJSON(t, pod("nginx:1.27")), admissionv1.Create, nil)
		// Another webhook adds a sidecar; pullgate is called again on the result.
		once.Spec.Containers = append(once.Spec.Containers, corev1.Container{Name: "side", Image: "busybox:1.36"})
		raw, err := json.Marshal(once)
		if err != nil {
			t.Fatal(err)
		}
		_, o := originalOf(t, raw, admissionv1.Create, nil)
		want := map[string]string{"spec.containers[0].image": "nginx:1.27", "spec.containers[1].image": "busybox:1.36"}
		if fmt.Sprint(o.Images) != fmt.Sprint(want) {
			t.Errorf("originals %v, want %v", o.Images, want)
		}
	})
	t.Run("idempotent", func(t *testing.T) {
		t.Parallel()
		once, _ := originalOf(t, podJSON(t, pod("nginx:1.27")), admissionv1.Create, nil)
		raw, _ := json.Marshal(once)
		pol := mustLoad(t, "testdata/policy.yaml")
		p, err := NewPlan(pol, Input{Operation: admissionv1.Create, Namespace: "default", Object: raw})
		if err != nil {
			t.Fatal(err)
		}
		if r := p.Apply(outcomesFor(p, nil)); len(r.Patch) != 0 {
			t.Errorf("second run patches: %v", r.Patch)
		}
	})
	t.Run("bounded", func(t *testing.T) {
		t.Parallel()
		var b strings.Builder
		b.WriteString("apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {a: b}}\nspec:\n  containers:\n")
		for i := range 200 {
			fmt.Fprintf(&b, "  - {name: c%d, image: \"nginx:%d\"}\n", i, i)
		}
		got, o := originalOf(t, podJSON(t, b.String()), admissionv1.Create, nil)
		if v := got.Annotations[OriginalAnnotation]; len(v) > maxOriginalLength {
			t.Errorf("annotation is %d bytes, more than %d", len(v), maxOriginalLength)
		}
		if o.Omitted == 0 || len(o.Images)+o.Omitted != 200 {
			t.Errorf("%d images recorded, %d omitted; want 200 in all", len(o.Images), o.Omitted)
		}
		if got.Annotations["a"] != "b" {
			t.Error("existing annotations lost")
		}
	})
}
