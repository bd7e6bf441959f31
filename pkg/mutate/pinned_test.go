package mutate_test

import (
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/mutate"
)

// Pinned lists the digests a pod ends up on where pullgate talks to the registry anyway: a
// resolved tag, or a digest on a mirror; never a digest on a registry only the pod names, nor a
// tag that could not be resolved.
func TestPinned(t *testing.T) {
	t.Parallel()
	pol := mustCheck(t, "apiVersion: pullgate.dev/v1alpha1\nkind: Policy\nmirrors: [{registry: docker.io, mirror: mirror.example.com/hub}]\n")
	digest := "sha256:" + strings.Repeat("a", 64)
	obj := []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[
		{"name":"tag","image":"nginx:1.27"},
		{"name":"failed","image":"redis:7"},
		{"name":"onmirror","image":"mirror.example.com/hub/library/busybox@` + digest + `"},
		{"name":"elsewhere","image":"registry.example.org/app@` + digest + `"}]}}`)
	plan, err := mutate.NewPlan(pol, mutate.Input{Operation: admissionv1.Create, Namespace: "apps", Object: obj})
	if err != nil {
		t.Fatal(err)
	}
	outcomes := map[string]contract.Outcome{}
	for _, r := range plan.Requests() {
		if strings.Contains(r.Ref.String(), "nginx") {
			outcomes[r.Ref.String()] = contract.Outcome{Resolution: contract.Resolution{Digest: digest}}
		}
	}
	var got []string
	for _, p := range plan.Pinned(outcomes) {
		got = append(got, p.Field+" "+p.Ref.String())
	}
	want := []string{
		"spec.containers[0].image mirror.example.com/hub/library/nginx@" + digest,
		"spec.containers[2].image mirror.example.com/hub/library/busybox@" + digest,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("pinned:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
