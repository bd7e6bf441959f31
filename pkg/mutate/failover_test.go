package mutate

import (
	"errors"
	"strings"
	"testing"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/policy"
)

const failoverPolicy = `apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors:
  - {registry: docker.io, mirror: m1.example.com/hub}
  - {registry: docker.io, mirror: "m2.example.com:5000/hub"}
  - {registry: quay.io, mirror: m1.example.com/quay}
resolve: {onError: %s}
`

// TestFailover: an image goes to, and is pinned against, the mirror that served its digest;
// the warning names the mirrors passed over and why. Nothing served leaves it on the first.
func TestFailover(t *testing.T) {
	t.Parallel()
	const d = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	down := errors.New("registry circuit open: m1.example.com failed 5 calls in a row")
	cases := []struct {
		name, onError, image string
		outcome              *contract.Outcome // nil: nothing to resolve
		alternates           string            // the request's, comma-separated
		want                 string            // the image after the patch
		warning, deny        string            // substrings
	}{
		{name: "first serves", image: "nginx:1.27", outcome: &contract.Outcome{Resolution: contract.Resolution{Digest: d}},
			alternates: "m2.example.com:5000/hub/library/nginx:1.27", want: "m1.example.com/hub/library/nginx:1.27@" + d},
		{name: "second serves", image: "nginx:1.27", outcome: &contract.Outcome{Resolution: contract.Resolution{Digest: d, Failover: &contract.Failover{Served: 1, Skipped: []error{down}}}},
			alternates: "m2.example.com:5000/hub/library/nginx:1.27", want: "m2.example.com:5000/hub/library/nginx:1.27@" + d,
			warning: `spec.containers[0].image: mirror m1.example.com skipped (registry circuit open: m1.example.com failed 5 calls in a row); "nginx:1.27" pinned against mirror m2.example.com:5000`},
		{name: "second serves stale", image: "nginx:1.27", outcome: &contract.Outcome{Resolution: contract.Resolution{Digest: d, Stale: true, Failover: &contract.Failover{Served: 1, Skipped: []error{down}}}},
			want: "m2.example.com:5000/hub/library/nginx:1.27@" + d, alternates: "m2.example.com:5000/hub/library/nginx:1.27", warning: "pinned to the last known digest"},
		{name: "none serves keeps the first", image: "nginx:1.27", outcome: &contract.Outcome{Err: errors.New("every mirror failed")},
			alternates: "m2.example.com:5000/hub/library/nginx:1.27", want: "m1.example.com/hub/library/nginx:1.27", warning: "could not pin"},
		{name: "none serves denies", onError: "Deny", image: "nginx:1.27", outcome: &contract.Outcome{Err: errors.New("every mirror failed")},
			alternates: "m2.example.com:5000/hub/library/nginx:1.27", deny: "every mirror failed"},
		{name: "digest goes to the first", image: "nginx@" + d, want: "m1.example.com/hub/library/nginx@" + d},
		{name: "already on the second stays", image: "m2.example.com:5000/hub/library/nginx:1.27", outcome: &contract.Outcome{Resolution: contract.Resolution{Digest: d}},
			want: "m2.example.com:5000/hub/library/nginx:1.27@" + d},
		{name: "one mirror, no alternates", image: "quay.io/prometheus/prometheus:v3", outcome: &contract.Outcome{Resolution: contract.Resolution{Digest: d}},
			want: "m1.example.com/quay/prometheus/prometheus:v3@" + d},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			onError := tc.onError
			if onError == "" {
				onError = string(policy.OnErrorKeep)
			}
			pol := fuzzCompile(t, strings.Replace(failoverPolicy, "%s", onError, 1))
			p, err := NewPlan(pol, Input{Operation: "CREATE", Namespace: "apps", Object: podJSON(t, pod(tc.image))})
			if err != nil {
				t.Fatal(err)
			}
			reqs := p.Requests()
			outcomes := map[string]contract.Outcome{}
			switch {
			case tc.outcome == nil && len(reqs) > 0:
				t.Fatalf("%d requests, want none", len(reqs))
			case tc.outcome != nil && len(reqs) != 1:
				t.Fatalf("%d requests, want one", len(reqs))
			case tc.outcome != nil:
				var alts []string
				for _, a := range reqs[0].Alternates {
					alts = append(alts, a.String())
				}
				if got := strings.Join(alts, ","); got != tc.alternates {
					t.Errorf("alternates %q, want %q", got, tc.alternates)
				}
				outcomes[reqs[0].Ref.String()] = *tc.outcome
			}
			res := p.Apply(outcomes)
			if tc.deny != "" {
				if !strings.Contains(res.Deny, tc.deny) || res.Patch != nil {
					t.Errorf("deny %q with %d patch ops, want %q", res.Deny, len(res.Patch), tc.deny)
				}
				return
			}
			_, got := applyPatch(t, podJSON(t, pod(tc.image)), res.Patch)
			if img := got.Spec.Containers[0].Image; img != tc.want {
				t.Errorf("image %s, want %s", img, tc.want)
			}
			all := strings.Join(res.Warnings, "\n")
			if (tc.warning == "") != (len(res.Warnings) == 0) || !strings.Contains(all, tc.warning) {
				t.Errorf("warnings:\n%s\nwant %q", all, tc.warning)
			}
			for _, c := range res.Changes {
				if c.Action == ActionRewrite && !strings.HasPrefix(tc.want, c.To) {
					t.Errorf("rewrite recorded to %s, the image went to %s", c.To, tc.want)
				}
			}
		})
	}
}
