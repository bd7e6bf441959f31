//go:build e2e

package node_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullgate/pullgate/test/e2e"
)

// TestAirGapped: with the upstream gone, a pod pinned earlier still starts through the mirror;
// with the mirror gone too, a pod in a namespace whose rule says Never starts from the node's
// cache with no registry request at all.
func TestAirGapped(t *testing.T) {
	ctx := t.Context()
	regs := env.Node.Registries
	digest := pushBusybox(t, "e2e/offline:v1", "offline")
	ns := namespace(t, "airgap", "enforce", nil, true)

	// The first pod fills the mirror (and the webhook's cache) while the upstream is there.
	first := runPod(t, ns, e2e.BusyboxPod("first", "cat /hello", regs.RemoteRef("e2e/offline:v1")))
	if want := regs.MirrorRef("e2e/offline:v1@" + digest); first.Spec.Containers[0].Image != want {
		t.Fatalf("admitted as %q, want %q", first.Spec.Containers[0].Image, want)
	}
	if err := env.Node.RemoveImages(ctx, "e2e/offline"); err != nil {
		t.Fatal(err)
	}

	regs.StopUpstream()
	mirrorStopped := false
	t.Cleanup(func() {
		if err := regs.ResumeUpstream(); err != nil {
			t.Error(err)
		}
		// Distribution 2.8 in proxy mode does not start while its upstream is unreachable (it
		// panics pinging it), so the mirror comes back after the upstream.
		if mirrorStopped {
			if err := regs.StartMirror(context.Background()); err != nil {
				t.Error(err)
			}
		}
	})
	nodeBefore, mirrorBefore := regs.RemoteLink.Conns(), regs.MirrorLink.Conns()
	second := runPod(t, ns, e2e.BusyboxPod("second", "cat /hello", regs.RemoteRef("e2e/offline:v1")))
	if want := regs.MirrorRef("e2e/offline:v1@" + digest); second.Spec.Containers[0].Image != want {
		t.Errorf("with the upstream down the pod was admitted as %q, want %q", second.Spec.Containers[0].Image, want)
	}
	if got := env.EventMessages(ctx, ns, "second", "Pulled"); len(got) == 0 || !strings.Contains(got[0], "Successfully pulled") {
		t.Errorf("the node did not pull through the mirror: Pulled events %q", got)
	}
	if regs.RemoteLink.Conns() != nodeBefore || regs.MirrorLink.Conns() != mirrorBefore {
		t.Errorf("connections to the stopped upstream were accepted")
	}

	// Air-gapped: the mirror goes too. The manifest names the digest (as `webhook mutate`
	// writes it for GitOps), so admission needs no registry; Never needs none on the node.
	regs.StopMirror()
	mirrorStopped = true
	airgapped := namespace(t, "airgapped", "enforce", map[string]string{"pullgate-e2e/airgapped": "true"}, true)
	logBefore, err := regs.MirrorAccessLog("")
	if err != nil {
		t.Fatal(err)
	}
	third := runPod(t, airgapped, e2e.BusyboxPod("third", "cat /hello", regs.RemoteRef("e2e/offline:v1@"+digest)))
	c := third.Spec.Containers[0]
	if want := regs.MirrorRef("e2e/offline:v1@" + digest); c.Image != want || c.ImagePullPolicy != corev1.PullNever {
		t.Errorf("air-gapped pod admitted as %q %s, want %q Never", c.Image, c.ImagePullPolicy, want)
	}
	present := env.EventMessages(ctx, airgapped, "third", "Pulled")
	if len(present) == 0 || !strings.Contains(present[0], "already present on machine") {
		t.Errorf("Pulled events %q, want the kubelet's \"already present on machine\"", present)
	}
	logAfter, err := regs.MirrorAccessLog("")
	if err != nil {
		t.Fatal(err)
	}
	if len(logAfter) != len(logBefore) || regs.RemoteLink.Conns() != nodeBefore {
		t.Errorf("registry requests during the air-gapped start: mirror %d, upstream %d", len(logAfter)-len(logBefore), regs.RemoteLink.Conns()-nodeBefore)
	}
}

// TestMissingPullSecret records what happens when the namespace lacks the pull secret pullgate
// injects: on kubelet 1.37 the pod cannot start against the authenticated mirror, even though
// the image is already on the node (KubeletEnsureSecretPulledImages re-checks credentials).
func TestMissingPullSecret(t *testing.T) {
	ctx := t.Context()
	regs := env.Node.Registries
	digest := pushBusybox(t, "e2e/nosecret:v1", "nosecret")
	withSecret := namespace(t, "secret", "enforce", nil, true)
	runPod(t, withSecret, e2e.BusyboxPod("pulls", "cat /hello", regs.RemoteRef("e2e/nosecret:v1")))

	ns := namespace(t, "nosecret", "enforce", nil, false)
	client, warnings := env.ClientWithWarnings()
	pod := e2e.BusyboxPod("nosecret", "cat /hello", regs.RemoteRef("e2e/nosecret:v1"))
	created, err := client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// pullgate adds the secret, but says at admission that it is not there: the author learns
	// it now, not from ErrImagePull.
	got := warnings.Take()
	t.Logf("admission warnings: %q", got)
	mirrorHost, _, _ := strings.Cut(regs.Mirror, "/")
	wantWarning := fmt.Sprintf("pull secret %s does not exist in namespace %s: the kubelet will fail to pull from %s with 401 Unauthorized", e2e.MirrorCredentials, ns, mirrorHost)
	if !slices.Contains(got, wantWarning) {
		t.Errorf("admission warnings %q, want %q", got, wantWarning)
	}
	if want := regs.MirrorRef("e2e/nosecret:v1@" + digest); created.Spec.Containers[0].Image != want || !hasSecret(created.Spec.ImagePullSecrets, e2e.MirrorCredentials) {
		t.Fatalf("admitted as %q with secrets %v", created.Spec.Containers[0].Image, created.Spec.ImagePullSecrets)
	}
	waiting, err := env.WaitPod(ctx, ns, "nosecret", 60*time.Second, func(p *corev1.Pod) bool {
		for _, s := range p.Status.ContainerStatuses {
			if w := s.State.Waiting; w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff") {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	failed := env.EventMessages(ctx, ns, "nosecret", "Failed")
	found := false
	for _, m := range failed {
		found = found || strings.Contains(m, "401 Unauthorized")
	}
	if !found {
		t.Errorf("Failed events %q, want the mirror's 401", failed)
	}
	t.Logf("kubelet: %s: %s", waiting.Status.ContainerStatuses[0].State.Waiting.Reason, strings.Join(failed, " | "))
}
