//go:build e2e

package e2e_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullgate/pullgate/test/e2e"
)

// recoveryTimeout bounds the wait for the first mirror to take over again: its circuit opened
// while it was down, and the resolver's cooldown (30s) passes before its probe.
const recoveryTimeout = 2 * time.Minute

// Issue 16: two mirrors for the upstream, tried in order; two fault proxies in front of the same
// Distribution mirror play them, so they serve the same digests on different hosts. While the
// first is down every pod is admitted, rewritten to the second and pinned against it, with a
// warning that names the first and why; once the first is back (its circuit's cooldown over),
// pods are pinned against the first again. The webhook configuration fails closed: a call that
// overran the webhook timeout could not pass for an admission.
func TestMirrorFailover(t *testing.T) {
	for _, mode := range []e2e.FaultMode{e2e.Unavailable, e2e.Reset} {
		t.Run("first mirror "+mode.String(), func(t *testing.T) {
			app := "e2e/failover-" + mode.String() + ":v1"
			d := env.PushImage(t, app)
			image := env.UpstreamRef(app)
			m1, m2 := e2e.StartFaultProxy(t, env.Mirror), e2e.StartFaultProxy(t, env.Mirror)
			on := func(m *e2e.FaultProxy) string { return m.Addr + "/" + app + "@" + d.String() }

			p := env.DefaultPolicy()
			p.Mirrors = []e2e.Mirror{
				{Registry: env.Upstream, Mirror: m1.Addr, Insecure: true},
				{Registry: env.Upstream, Mirror: m2.Addr, Insecure: true},
			}
			s := e2e.NewScope(t)
			env.Pullgate(t, s, p, admissionregistrationv1.Fail)
			ns := env.Namespace(t, s, "enforce")
			// A digest is rewritten without a registry call: the probe leaves the breakers alone.
			env.WaitForMutation(t, ns, env.UpstreamRef("e2e/ready@"+readyDigest))

			m1.SetMode(mode)
			c, warnings := env.ClientWithWarnings()
			// More pods than the breaker's threshold (5): the first ones find m1 failing, the
			// later ones its circuit open.
			for i := range 7 {
				name := fmt.Sprintf("down-%d", i)
				if _, err := c.CoreV1().Pods(ns).Create(t.Context(), e2e.NewPod(name, image), metav1.CreateOptions{}); err != nil {
					t.Fatalf("%s not admitted with the second mirror up: %v", name, err)
				}
				got := warnings.Take()
				stored := get(t, ns, name)
				t.Logf("%s admitted as %s, warnings %q", name, stored.Spec.Containers[0].Image, got)
				checkContainer(t, name, stored.Spec.Containers[0], on(m2), corev1.PullIfNotPresent)
				if !mentions(got, "mirror "+m1.Addr+" skipped (", "pinned against mirror "+m2.Addr) {
					t.Errorf("%s: no warning that %s was skipped for %s: %q", name, m1.Addr, m2.Addr, got)
				}
			}

			m1.SetMode(e2e.Pass)
			var lastImage string
			var lastWarnings []string
			err := e2e.Poll(t.Context(), recoveryTimeout, func(ctx context.Context) (bool, error) {
				out, w, err := env.DryRun(ctx, ns, e2e.NewPod("probe", image))
				if err == nil {
					lastImage, lastWarnings = out.Spec.Containers[0].Image, w
				}
				return lastImage == on(m1), nil
			})
			if err != nil {
				t.Fatalf("never pinned against %s again after it recovered: %v; last %s, warnings %q", m1.Addr, err, lastImage, lastWarnings)
			}
			if _, err := c.CoreV1().Pods(ns).Create(t.Context(), e2e.NewPod("recovered", image), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			got := warnings.Take()
			stored := get(t, ns, "recovered")
			t.Logf("recovered admitted as %s, warnings %q", stored.Spec.Containers[0].Image, got)
			checkContainer(t, "recovered", stored.Spec.Containers[0], on(m1), corev1.PullIfNotPresent)
			if len(got) != 0 {
				t.Errorf("warnings with the first mirror back: %q", got)
			}
		})
	}
}
