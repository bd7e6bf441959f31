//go:build e2e

package node_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullgate/pullgate/test/e2e"
)

// TestImageVolume: an image volume's reference is pinned to the mirror like a container's, and
// the kubelet pulls it from the mirror by that digest with the injected secret. containerd 1.6
// cannot mount image volumes (that needs containerd 2.1 or later): the container never starts
// and the kubelet says why. The test holds both halves, so a runtime upgrade shows up here.
func TestImageVolume(t *testing.T) {
	ctx := t.Context()
	regs := env.Node.Registries
	digest := pushBusybox(t, "e2e/volume-data:v1", "volume")
	// Content of its own: an image another test pushes under another name would already be in
	// containerd's content store, and that test would see no manifest fetch.
	pushBusybox(t, "e2e/volume-app:v1", "the image volume test's app")
	ns := namespace(t, "volume", "enforce", nil, true)
	pod := e2e.BusyboxPod("vol", "cat /data/hello; sleep 3600", regs.RemoteRef("e2e/volume-app:v1"))
	pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
		Image: &corev1.ImageVolumeSource{Reference: regs.RemoteRef("e2e/volume-data:v1")},
	}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	created, err := env.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := regs.MirrorRef("e2e/volume-data:v1@" + digest)
	if got := created.Spec.Volumes[0].Image; got.Reference != want || got.PullPolicy != corev1.PullIfNotPresent {
		t.Errorf("image volume admitted as %q %s, want %q IfNotPresent", got.Reference, got.PullPolicy, want)
	}
	var failed []string
	err = e2e.Poll(ctx, 60*time.Second, func(ctx context.Context) (bool, error) {
		failed = env.EventMessages(ctx, ns, "vol", "Failed")
		return len(failed) > 0, nil
	})
	if err != nil {
		t.Fatalf("no Failed event: %v", err)
	}
	pulled := env.EventMessages(ctx, ns, "vol", "Pulled")
	if !slices.ContainsFunc(pulled, func(m string) bool { return strings.Contains(m, `"`+want+`"`) }) {
		t.Errorf("the kubelet did not pull the volume's image %s: Pulled events %q", want, pulled)
	}
	if !strings.Contains(failed[0], "failed to generate spec") {
		t.Errorf("containerd 1.6 was expected to refuse the image volume; Failed events %q", failed)
	}
	t.Logf("containerd 1.6 and image volumes: %s", failed[0])
}
