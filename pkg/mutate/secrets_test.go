package mutate_test

import (
	"context"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/policy"
)

// fakeSecrets answers from a fixed map: namespace/name -> exists; absent means unknown.
type fakeSecrets map[string]bool

func (f fakeSecrets) Exists(_ context.Context, namespace, name string) (bool, bool) {
	exists, known := f[namespace+"/"+name]
	return exists, known
}

// The webhook warns when a pull secret it adds does not exist in the pod's namespace, naming
// the mirror the kubelet will fail against; never when it exists, cannot be told, is not added
// (the pod has it already) or in audit mode, where nothing is added.
func TestHandlerMissingPullSecret(t *testing.T) {
	t.Parallel()
	pol, err := policy.Load("testdata/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	const warning = "pull secret mirror-pull does not exist in namespace %s: the kubelet will fail to pull from mirror.example.com with 401 Unauthorized"
	tests := []struct {
		name, namespace, pod string
		secrets              fakeSecrets
		want                 string // "" for no warning about secrets
	}{
		{"missing", "apps", `{"containers":[{"name":"a","image":"nginx:1.27@sha256:` + strings.Repeat("a", 64) + `"}]}`, fakeSecrets{"apps/mirror-pull": false}, "apps"},
		{"exists", "apps", `{"containers":[{"name":"a","image":"nginx:1.27@sha256:` + strings.Repeat("a", 64) + `"}]}`, fakeSecrets{"apps/mirror-pull": true}, ""},
		{"unknown", "apps", `{"containers":[{"name":"a","image":"nginx:1.27@sha256:` + strings.Repeat("a", 64) + `"}]}`, fakeSecrets{}, ""},
		{"already on the pod", "apps", `{"imagePullSecrets":[{"name":"mirror-pull"}],"containers":[{"name":"a","image":"nginx:1.27@sha256:` + strings.Repeat("a", 64) + `"}]}`, fakeSecrets{"apps/mirror-pull": false}, ""},
		{"audit", "team-a", `{"containers":[{"name":"a","image":"nginx:1.27@sha256:` + strings.Repeat("a", 64) + `"}]}`, fakeSecrets{"team-a/mirror-pull": false}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := mutate.NewHandler(mutate.Handler{Policy: mutate.StaticPolicy{Policy: pol}, Secrets: tc.secrets})
			req := rawRequest(admissionv1.Create, []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":`+tc.pod+`}`))
			req.Namespace = tc.namespace
			resp := h.Handle(t.Context(), req)
			if !resp.Allowed {
				t.Fatalf("denied: %v", resp.Result)
			}
			var got []string
			for _, w := range resp.Warnings {
				if strings.Contains(w, "pull secret") {
					got = append(got, w)
				}
			}
			switch {
			case tc.want == "" && len(got) > 0:
				t.Errorf("unexpected warnings %q", got)
			case tc.want != "" && (len(got) != 1 || got[0] != strings.Replace(warning, "%s", tc.want, 1)):
				t.Errorf("warnings %q, want %q", got, strings.Replace(warning, "%s", tc.want, 1))
			}
		})
	}
}
