//go:build e2e

package e2e_test

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullgate/pullgate/test/e2e"
)

// Issue 16, point 4: a pod owned by an excluded kind (CloudNativePG's Cluster, which recreates
// pods whose image differs from what it wrote) or selected by exclude.podSelector is admitted
// untouched through the real API server, while a pod beside it is rewritten and pinned.
func TestExcludedOwnerAndLabels(t *testing.T) {
	s := e2e.NewScope(t)
	ns := pullgateWith(t, s, map[string]any{"exclude": map[string]any{
		"owners":      []string{"postgresql.cnpg.io/Cluster"},
		"podSelector": map[string]any{"matchLabels": map[string]string{"example.com/gitops-managed": "true"}},
	}})

	const repo = "e2e/owned:v1"
	env.PushImage(t, repo)
	image := env.UpstreamRef(repo)
	// A pod nobody excludes is pinned: the webhook is called for this namespace.
	if out := env.WaitForMutation(t, ns, image); !isPinned(out.Spec.Containers[0].Image) {
		t.Fatalf("control pod admitted as %q, want pinned", out.Spec.Containers[0].Image)
	}

	controller := true
	owned := e2e.NewPod("db-1", image)
	owned.OwnerReferences = []metav1.OwnerReference{{APIVersion: "postgresql.cnpg.io/v1", Kind: "Cluster", Name: "db", UID: "4c0e5b3e-0000-4000-8000-000000000001", Controller: &controller}}
	labelled := e2e.NewPod("synced", image)
	labelled.Labels = map[string]string{"example.com/gitops-managed": "true"}
	otherGroup := e2e.NewPod("capi", image)
	otherGroup.OwnerReferences = []metav1.OwnerReference{{APIVersion: "cluster.x-k8s.io/v1beta1", Kind: "Cluster", Name: "c", UID: "4c0e5b3e-0000-4000-8000-000000000002"}}

	c, warnings := env.ClientWithWarnings()
	for _, tc := range []struct {
		pod       *corev1.Pod
		untouched bool
	}{{owned, true}, {labelled, true}, {otherGroup, false}} {
		created, err := c.CoreV1().Pods(ns).Create(t.Context(), tc.pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("%s: %v", tc.pod.Name, err)
		}
		got := created.Spec.Containers[0].Image
		t.Logf("%s admitted as %s, secrets %v, warnings %q", tc.pod.Name, got, created.Spec.ImagePullSecrets, warnings.Take())
		if tc.untouched && (got != image || len(created.Spec.ImagePullSecrets) != 0 || created.Annotations["pullgate.dev/original"] != "") {
			t.Errorf("%s: excluded pod changed: image %q, secrets %v, annotations %v", tc.pod.Name, got, created.Spec.ImagePullSecrets, created.Annotations)
		}
		if !tc.untouched && !isPinned(got) {
			t.Errorf("%s: a Cluster of another API group is not excluded, yet the image is %q", tc.pod.Name, got)
		}
	}
}
