//go:build e2e

package e2e_test

import (
	"strings"
	"testing"
	"time"
	"unicode"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullgate/pullgate/test/e2e"
)

// Scenario 8: when the mirror hangs, errors or is unreachable, pods are still admitted, unpinned,
// with a warning, within the resolve budget and well inside the webhook timeout (onError Keep).
func TestResolveFailure(t *testing.T) {
	const (
		resolveTimeout = time.Second
		// Admission must end within the resolve timeout plus overhead; it must not be the API
		// server giving up on the webhook after timeoutSeconds (5s).
		budget = resolveTimeout + 2*time.Second
	)
	policy := func(mirror string) e2e.Policy {
		p := env.DefaultPolicy()
		p.Mirrors[0].Mirror = mirror
		p.Resolve.Timeout = resolveTimeout.String()
		return p
	}
	// admitted creates a pod with a fresh image (no cache can answer) and checks the outcome.
	admitted := func(t *testing.T, w *e2e.Webhook, ns, repo string) {
		t.Helper()
		env.PushImage(t, repo)
		image := env.UpstreamRef(repo)
		c, warnings := env.ClientWithWarnings()
		began := time.Now()
		_, err := c.CoreV1().Pods(ns).Create(t.Context(), e2e.NewPod("app", image), metav1.CreateOptions{})
		took := time.Since(began)
		got := warnings.Take()
		if err != nil {
			t.Fatalf("create took %s and failed: %v", took, err)
		}
		stored := get(t, ns, "app")
		t.Logf("admitted in %s as %s, warnings %q", took.Round(time.Millisecond), stored.Spec.Containers[0].Image, got)
		if took > budget {
			t.Errorf("admission took %s, over the %s budget", took, budget)
		}
		if len(got) == 0 {
			t.Errorf("the client received no warning for an image that could not be resolved")
			explainMissingWarnings(t, w, ns, image)
		}
		if isPinned(stored.Spec.Containers[0].Image) {
			t.Errorf("image %q is pinned although the mirror failed", stored.Spec.Containers[0].Image)
		}
	}

	t.Run("proxy", func(t *testing.T) {
		s := e2e.NewScope(t)
		proxy := e2e.StartFaultProxy(t, env.Mirror)
		w, _ := env.Pullgate(t, s, policy(proxy.Addr), "")
		ns := env.Namespace(t, s, "enforce")

		// Healthy first: proves resolution goes through the proxy.
		const ok = "e2e/fault-ok:v1"
		d := env.PushImage(t, ok)
		out := env.WaitForMutation(t, ns, env.UpstreamRef(ok))
		if want := proxy.Addr + "/" + ok + "@" + d.String(); out.Spec.Containers[0].Image != want {
			t.Fatalf("through the healthy proxy: image = %q, want %q", out.Spec.Containers[0].Image, want)
		}
		if proxy.Hits() == 0 {
			t.Fatal("the webhook resolved without calling the proxy")
		}

		for _, mode := range []e2e.FaultMode{e2e.Hang, e2e.Unavailable, e2e.Reset} {
			t.Run(mode.String(), func(t *testing.T) {
				proxy.SetMode(mode)
				t.Cleanup(func() { proxy.SetMode(e2e.Pass) })
				admitted(t, w, env.Namespace(t, s, "enforce"), "e2e/fault-"+mode.String()+":v1")
			})
		}
	})

	t.Run("connection refused", func(t *testing.T) {
		s := e2e.NewScope(t)
		w, _ := env.Pullgate(t, s, policy(e2e.ClosedAddr(t)), "")
		ns := env.Namespace(t, s, "enforce")
		const probe = "e2e/fault-refused-probe:v1"
		env.PushImage(t, probe)
		// Nothing can be pinned here; pullgate is in effect once it warns.
		env.WaitForDryRun(t, ns, e2e.NewPod("probe", env.UpstreamRef(probe)), func(_ *corev1.Pod, w []string, err error) bool {
			return err == nil && len(w) > 0
		})
		admitted(t, w, ns, "e2e/fault-refused:v1")
	})
}

// explainMissingWarnings asks the webhook directly, with a fresh pod for image, and reports the
// warnings it answers with and whether the API server could have passed them on: it drops a
// warning that is not a valid HTTP header value (a control character such as a newline).
func explainMissingWarnings(t *testing.T, w *e2e.Webhook, ns, image string) {
	t.Helper()
	req, err := e2e.PodRequest(ns, e2e.NewPod("direct", image))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := w.Review(t.Context(), req)
	if err != nil {
		t.Errorf("direct review: %v", err)
		return
	}
	for _, warning := range resp.Warnings {
		t.Errorf("the webhook, asked directly, warns %q; valid as an HTTP warning header: %v", warning, !strings.ContainsFunc(warning, unicode.IsControl))
	}
}
