//go:build e2e

package e2e_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/pullgate/pullgate/test/e2e"
)

// Scenario 10: a changed policy file takes effect without a restart, whichever way it is
// replaced: written in place, renamed over (editors, config management), or swapped the way
// the kubelet updates a mounted ConfigMap (a symlink flip of ..data).
func TestPolicyReload(t *testing.T) {
	const app = "e2e/reload:v1"
	d := env.PushImage(t, app)
	image := env.UpstreamRef(app)

	// reloaded waits for the policy whose secret is secret, then checks a real pod follows it.
	reloaded := func(t *testing.T, ns, secret string) {
		t.Helper()
		env.WaitForDryRun(t, ns, e2e.NewPod("probe", image), func(out *corev1.Pod, _ []string, err error) bool {
			return err == nil && slices.Contains(secretNames(out), secret)
		})
		stored := create(t, ns, e2e.NewPod("after-"+secret, image))
		checkContainer(t, "container", stored.Spec.Containers[0], pinned(app, d), corev1.PullAlways)
		checkSecrets(t, stored, secret)
	}
	next := func(secret string) e2e.Policy {
		p := env.DefaultPolicy()
		p.PullPolicy = string(corev1.PullAlways)
		p.ImagePullSecrets = []string{secret}
		return p
	}

	t.Run("written in place", func(t *testing.T) {
		s := e2e.NewScope(t)
		w, _ := env.Pullgate(t, s, env.DefaultPolicy(), "")
		ns := env.Namespace(t, s, "enforce")
		env.WaitForMutation(t, ns, image)
		if err := e2e.WritePolicy(w.PolicyPath, next("in-place")); err != nil {
			t.Fatal(err)
		}
		reloaded(t, ns, "in-place")
	})

	t.Run("renamed over", func(t *testing.T) {
		s := e2e.NewScope(t)
		w, _ := env.Pullgate(t, s, env.DefaultPolicy(), "")
		ns := env.Namespace(t, s, "enforce")
		env.WaitForMutation(t, ns, image)
		if err := w.ReplacePolicy(next("renamed-1")); err != nil {
			t.Fatal(err)
		}
		reloaded(t, ns, "renamed-1")
		// A second rename: a watch on the first file's inode would have lost track by now.
		if err := w.ReplacePolicy(next("renamed-2")); err != nil {
			t.Fatal(err)
		}
		reloaded(t, ns, "renamed-2")
	})

	t.Run("configmap symlink swap", func(t *testing.T) {
		s := e2e.NewScope(t)
		dir := filepath.Join(env.TestDir(t), "configmap")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		cm, err := e2e.NewConfigMapPolicy(dir, env.DefaultPolicy())
		if err != nil {
			t.Fatal(err)
		}
		w := env.StartWebhook(t, e2e.WebhookOptions{PolicyPath: cm.Path})
		env.Register(t, e2e.WebhookConfig("pullgate-"+s.ID, s, w.URL, w.CABundle, ""))
		ns := env.Namespace(t, s, "enforce")
		env.WaitForMutation(t, ns, image)
		for _, secret := range []string{"configmap-1", "configmap-2"} {
			if err := cm.Update(next(secret)); err != nil {
				t.Fatal(err)
			}
			reloaded(t, ns, secret)
		}
	})
}
