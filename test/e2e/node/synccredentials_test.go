//go:build e2e

package node_test

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullgate/pullgate/test/e2e"
)

// Issue 16, point 3: with policy.syncCredentials, the controller copies the mirror's credential
// Secret into a namespace as it opts in, so the pull secret pullgate injects exists: no
// admission warning, and the pod pulls from the authenticated mirror on the real node. When the
// namespace opts out, the copy goes.
func TestSyncCredentials(t *testing.T) {
	ctx := t.Context()
	regs := env.Node.Registries
	orig := pg.Values["policy"].(map[string]any)
	pol := maps.Clone(orig)
	pol["syncCredentials"] = []any{map[string]any{"from": e2e.MirrorCredentials}}
	began := time.Now()
	if err := pg.Upgrade(ctx, map[string]any{"policy": pol}); err != nil {
		t.Fatal(err)
	}
	t.Logf("helm upgrade with syncCredentials: %s", time.Since(began).Round(time.Millisecond))
	t.Cleanup(func() {
		if err := pg.Upgrade(context.Background(), map[string]any{"policy": orig}); err != nil {
			t.Errorf("restoring the suite's policy: %v", err)
		}
	})

	digest := pushBusybox(t, "e2e/synced:v1", "synced")
	ns := namespace(t, "synced", "enforce", nil, false)
	var copied *corev1.Secret
	began = time.Now()
	for {
		s, err := env.Client.CoreV1().Secrets(ns).Get(ctx, e2e.MirrorCredentials, metav1.GetOptions{})
		if err == nil {
			copied = s
			break
		}
		if !apierrors.IsNotFound(err) || time.Since(began) > 2*time.Minute {
			t.Fatalf("no copy of %s in %s after %s: %v", e2e.MirrorCredentials, ns, time.Since(began).Round(time.Second), err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("copy in %s after %s (the controller rolled to --sync-credentials), labels %v", ns, time.Since(began).Round(100*time.Millisecond), copied.Labels)
	if copied.Type != corev1.SecretTypeDockerConfigJson || copied.Labels["app.kubernetes.io/managed-by"] != "pullgate" {
		t.Errorf("copy is %s with labels %v", copied.Type, copied.Labels)
	}

	client, warnings := env.ClientWithWarnings()
	pod := e2e.BusyboxPod("synced", "cat /hello", regs.RemoteRef("e2e/synced:v1"))
	created, err := client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := warnings.Take()
	t.Logf("admitted as %s, warnings %q", created.Spec.Containers[0].Image, got)
	if slices.ContainsFunc(got, func(w string) bool { return strings.Contains(w, "does not exist") }) {
		t.Errorf("a missing secret warning although the copy exists: %q", got)
	}
	if want := regs.MirrorRef("e2e/synced:v1@" + digest); created.Spec.Containers[0].Image != want {
		t.Errorf("admitted as %q, want %q", created.Spec.Containers[0].Image, want)
	}
	if _, err := env.WaitPod(ctx, ns, "synced", 90*time.Second, e2e.PodStarted); err != nil {
		t.Fatalf("the pod did not start with the copied credentials: %v", err)
	}
	if out := podLogs(t, ns, "synced", "c0"); !strings.Contains(out, "hello from synced") {
		t.Errorf("pod logs %q", out)
	}

	// Opt-out: the label goes, and with it the copy.
	env.LabelNamespace(t, ns, map[string]*string{"pullgate.dev/mode": nil})
	began = time.Now()
	for {
		_, err := env.Client.CoreV1().Secrets(ns).Get(ctx, e2e.MirrorCredentials, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Since(began) > time.Minute {
			t.Fatalf("the copy is still in %s %s after the opt-out (%v)", ns, time.Since(began).Round(time.Second), err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("copy removed %s after the opt-out", time.Since(began).Round(100*time.Millisecond))
}
