package mutate

import (
	"strings"
	"testing"

	"github.com/pullgate/pullgate/pkg/contract"
)

// TestMirrorPick: a namespace's pick (pullgate.dev/mirror, allowed by tenantOverrides.mirrors)
// is tried first, the registry's other mirrors keep their policy order behind it, and the image
// is pinned against whichever served. A pick the image cannot use leaves the policy order.
func TestMirrorPick(t *testing.T) {
	t.Parallel()
	const d = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	pol := fuzzCompile(t, `apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors:
  - {registry: docker.io, mirror: m1.example.com/hub}
  - {registry: docker.io, mirror: "m2.example.com:5000/hub"}
  - {registry: docker.io, mirror: m3.example.com}
  - {registry: quay.io, mirror: m1.example.com/quay}
tenantOverrides: {mirrors: true}
`)
	cases := []struct {
		name, pick, image string
		served            int
		ref, alternates   string // the request's, alternates comma-separated
		want              string // the image after the patch
	}{
		{name: "no pick", image: "nginx:1.27", ref: "m1.example.com/hub/library/nginx:1.27",
			alternates: "m2.example.com:5000/hub/library/nginx:1.27,m3.example.com/library/nginx:1.27", want: "m1.example.com/hub/library/nginx:1.27@" + d},
		{name: "third picked", pick: "m3.example.com", image: "nginx:1.27", ref: "m3.example.com/library/nginx:1.27",
			alternates: "m1.example.com/hub/library/nginx:1.27,m2.example.com:5000/hub/library/nginx:1.27", want: "m3.example.com/library/nginx:1.27@" + d},
		{name: "picked is down", pick: "m2.example.com:5000/hub", image: "nginx:1.27", served: 1, ref: "m2.example.com:5000/hub/library/nginx:1.27",
			alternates: "m1.example.com/hub/library/nginx:1.27,m3.example.com/library/nginx:1.27", want: "m1.example.com/hub/library/nginx:1.27@" + d},
		{name: "pick of another registry", pick: "m1.example.com/quay", image: "nginx:1.27", ref: "m1.example.com/hub/library/nginx:1.27",
			alternates: "m2.example.com:5000/hub/library/nginx:1.27,m3.example.com/library/nginx:1.27", want: "m1.example.com/hub/library/nginx:1.27@" + d},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := Input{Operation: "CREATE", Namespace: "apps", Object: podJSON(t, pod(tc.image))}
			if tc.pick != "" {
				in.NamespaceAnnotations = map[string]string{"pullgate.dev/mirror": tc.pick}
			}
			p, err := NewPlan(pol, in)
			if err != nil {
				t.Fatal(err)
			}
			reqs := p.Requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want one", len(reqs))
			}
			var alts []string
			for _, a := range reqs[0].Alternates {
				alts = append(alts, a.String())
			}
			if got := reqs[0].Ref.String(); got != tc.ref {
				t.Errorf("tried first %s, want %s", got, tc.ref)
			}
			if got := strings.Join(alts, ","); got != tc.alternates {
				t.Errorf("alternates %q, want %q", got, tc.alternates)
			}
			res := contract.Resolution{Digest: d}
			if tc.served > 0 {
				res.Failover = &contract.Failover{Served: tc.served}
			}
			out := p.Apply(map[string]contract.Outcome{reqs[0].Ref.String(): {Resolution: res}})
			if _, got := applyPatch(t, podJSON(t, pod(tc.image)), out.Patch); got.Spec.Containers[0].Image != tc.want {
				t.Errorf("image %s, want %s", got.Spec.Containers[0].Image, tc.want)
			}
		})
	}
}
