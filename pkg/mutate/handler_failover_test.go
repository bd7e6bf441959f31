package mutate_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/policy"
	"github.com/pullgate/pullgate/pkg/resolve"
)

// The handler with two mirrors for docker.io and a real resolver: while the first is down the
// pod goes to, and is pinned against, the second, with a warning that says why; once the first
// is back and its circuit's cooldown over, pods go to the first again.
func TestHandlerFailover(t *testing.T) {
	t.Parallel()
	m1, m2 := newTestRegistry(t), newTestRegistry(t)
	d1, d2 := m1.push(t, "hub/library/app:v1"), m2.push(t, "hub/library/app:v1")
	pol, err := policy.Check(fmt.Appendf(nil, `apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors:
  - {registry: docker.io, mirror: %s/hub, insecure: true}
  - {registry: docker.io, mirror: %s/hub, insecure: true}
`, m1.host, m2.host))
	if err != nil {
		t.Fatal(err)
	}
	var skew atomic.Int64 // the resolver's clock runs ahead by this much
	res, err := resolve.New(resolve.Options{
		Registries:      map[string]resolve.Registry{m1.host: {Insecure: true}, m2.host: {Insecure: true}},
		BreakerFailures: 1, BreakerCooldown: time.Minute,
		Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) },
	})
	if err != nil {
		t.Fatal(err)
	}
	h := mutate.NewHandler(mutate.Handler{Policy: fixedPolicy{pol}, Resolver: res, OwnNamespace: "pullgate"})
	admit := func(wantHost, wantDigest, wantWarning string) {
		t.Helper()
		req := podRequest(t, admissionv1.Create, testPod("app:v1"))
		resp := h.Handle(context.Background(), req)
		got := applied(t, req, resp).Spec.Containers[0].Image
		if want := wantHost + "/hub/library/app:v1@" + wantDigest; got != want {
			t.Errorf("image %s, want %s (warnings %q)", got, want, resp.Warnings)
		}
		if w := strings.Join(resp.Warnings, "\n"); !strings.Contains(w, wantWarning) || (wantWarning == "") != (w == "") {
			t.Errorf("warnings %q, want %q", w, wantWarning)
		}
	}

	m1.status.Store(http.StatusServiceUnavailable)
	admit(m2.host, d2, fmt.Sprintf("mirror %s skipped (", m1.host))
	// m1's circuit is open: the next pod is answered from m2's cache, m1 not asked.
	before := m1.manifests.Load()
	admit(m2.host, d2, "circuit open")
	if n := m1.manifests.Load() - before; n != 0 {
		t.Errorf("m1 asked %d times with its circuit open", n)
	}
	m1.status.Store(0)
	skew.Store(int64(2 * time.Minute))
	admit(m1.host, d1, "")
}
