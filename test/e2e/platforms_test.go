//go:build e2e

package e2e_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullgate/pullgate/test/e2e"
)

// Issue 16, point 2: with platforms.fromNodes and an arm64 Node in the cluster (the object is
// enough: the webhook watches Nodes), a single-platform linux/amd64 image is pinned with a
// warning naming linux/arm64, and a multi-platform index covering both is pinned without one.
// A second webhook with onMismatch: Refuse leaves the single-platform image unpinned.
func TestPlatformsFromNodes(t *testing.T) {
	nodeName := "e2e-arm64-" + strings.ToLower(e2e.NewScope(t).ID)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, Labels: map[string]string{
		corev1.LabelOSStable: "linux", corev1.LabelArchStable: "arm64",
	}}}
	// Unschedulable and tainted: nothing else in the suite may land on a node with no kubelet.
	node.Spec.Unschedulable = true
	node.Spec.Taints = []corev1.Taint{{Key: "pullgate.dev/e2e-fake", Effect: corev1.TaintEffectNoSchedule}}
	client, _ := env.ClientWithWarnings()
	if _, err := client.CoreV1().Nodes().Create(t.Context(), node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// t.Context is already cancelled in Cleanup.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := client.CoreV1().Nodes().Delete(ctx, nodeName, metav1.DeleteOptions{}); err != nil {
			t.Logf("delete node %s: %v", nodeName, err)
		}
	})

	// A single-platform linux/amd64 image (random images carry no platform in their config).
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	singleRef, err := name.ParseReference(env.UpstreamRef("e2e/amd64-only:v1"), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(singleRef, img, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	env.PushIndex(t, "e2e/multi-arch:v1", types.OCIImageIndex, v1.Platform{OS: "linux", Architecture: "amd64"}, v1.Platform{OS: "linux", Architecture: "arm64"})

	for _, onMismatch := range []string{"Warn", "Refuse"} {
		t.Run(onMismatch, func(t *testing.T) {
			s := e2e.NewScope(t)
			ns := pullgateWith(t, s, map[string]any{"platforms": map[string]any{"fromNodes": true, "onMismatch": onMismatch}})

			wantWarning := "not linux/arm64: a node of those platforms would fail to run it (exec format error)"
			// The webhook starts watching Nodes on the first admission that asks: wait for it.
			out, warnings := env.WaitForDryRun(t, ns, e2e.NewPod("single", env.UpstreamRef("e2e/amd64-only:v1")), func(_ *corev1.Pod, warnings []string, err error) bool {
				return err == nil && slices.ContainsFunc(warnings, func(w string) bool { return strings.Contains(w, wantWarning) })
			})
			t.Logf("single-platform image admitted as %s with warnings %q", out.Spec.Containers[0].Image, warnings)
			if pinned := isPinned(out.Spec.Containers[0].Image); pinned != (onMismatch == "Warn") {
				t.Errorf("onMismatch %s: pinned = %v", onMismatch, pinned)
			}
			out, warnings = env.WaitForDryRun(t, ns, e2e.NewPod("multi", env.UpstreamRef("e2e/multi-arch:v1")), func(out *corev1.Pod, _ []string, err error) bool {
				return err == nil && isPinned(out.Spec.Containers[0].Image)
			})
			t.Logf("index admitted as %s with warnings %q", out.Spec.Containers[0].Image, warnings)
			for _, w := range warnings {
				if strings.Contains(w, "platform") {
					t.Errorf("a warning about platforms for an index that covers them: %q", w)
				}
			}
		})
	}
}
