//go:build e2e

package e2e_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/pullgate/pullgate/test/e2e"
)

// Issue 16, point 5: a tenant's namespace annotations narrow the policy as far as
// tenantOverrides allows, through the real API server and the webhook's namespace cache:
// pullgate.dev/mode: Audit (allowed) admits pods unchanged with would-be warnings; a mirror pick
// the policy does not allow is ignored with a warning naming the annotation, never a denial;
// removing the annotation brings enforcement back.
func TestNamespaceOverrides(t *testing.T) {
	s := e2e.NewScope(t)
	ns := pullgateWith(t, s, map[string]any{"tenantOverrides": map[string]any{"audit": true}})
	const repo = "e2e/tenant:v1"
	env.PushImage(t, repo)
	image := env.UpstreamRef(repo)
	if out := env.WaitForMutation(t, ns, image); !isPinned(out.Spec.Containers[0].Image) {
		t.Fatalf("before any annotation: admitted as %q, want pinned", out.Spec.Containers[0].Image)
	}

	annotate := func(mode, mirror *string) {
		t.Helper()
		b, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]*string{
			"pullgate.dev/mode": mode, "pullgate.dev/mirror": mirror,
		}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := env.Client.CoreV1().Namespaces().Patch(t.Context(), ns, types.MergePatchType, b, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	annotate(ptr("Audit"), ptr("registry.evil.example"))
	const ignored = `annotation pullgate.dev/mirror="registry.evil.example" ignored: the policy does not let namespaces pick mirrors (tenantOverrides.mirrors)`
	out, warnings := env.WaitForDryRun(t, ns, e2e.NewPod("tenant", image), func(out *corev1.Pod, _ []string, err error) bool {
		return err == nil && out.Spec.Containers[0].Image == image
	})
	t.Logf("annotated Audit and a mirror: admitted as %s, warnings %q", out.Spec.Containers[0].Image, warnings)
	if len(out.Spec.ImagePullSecrets) != 0 {
		t.Errorf("audit by annotation: secrets %v added", out.Spec.ImagePullSecrets)
	}
	if !slices.ContainsFunc(warnings, func(w string) bool { return strings.HasPrefix(w, "would rewrite") }) {
		t.Errorf("audit by annotation: no would-rewrite warning in %q", warnings)
	}
	if !slices.ContainsFunc(warnings, func(w string) bool { return strings.HasSuffix(w, ignored) }) {
		t.Errorf("no warning %q in %q", ignored, warnings)
	}

	annotate(nil, nil)
	if out := env.WaitForMutation(t, ns, image); !isPinned(out.Spec.Containers[0].Image) {
		t.Errorf("annotations removed: admitted as %q, want pinned", out.Spec.Containers[0].Image)
	}
}
