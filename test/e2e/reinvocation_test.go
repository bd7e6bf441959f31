//go:build e2e

package e2e_test

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync/atomic"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/pullgate/pullgate/test/e2e"
)

// Scenario 7: a webhook ordered after pullgate injects a sidecar; with reinvocationPolicy
// IfNeeded the API server calls pullgate again and the stored sidecar image is rewritten too.
func TestReinvocation(t *testing.T) {
	s := e2e.NewScope(t)
	const app, sidecar = "e2e/reinvoke-app:v1", "e2e/reinvoke-sidecar:v1"
	dApp := env.PushImage(t, app)
	dSidecar := env.PushImage(t, sidecar)

	_, pg := env.Pullgate(t, s, env.DefaultPolicy(), "")
	injector, calls := startSidecarInjector(t, env.UpstreamRef(sidecar))
	cfg := e2e.WebhookConfig("sidecar-"+s.ID, s, injector, env.WebhookCA.CertPEM, admissionregistrationv1.Fail)
	cfg.Webhooks[0].Name = "sidecar.e2e.pullgate.dev"
	never := admissionregistrationv1.NeverReinvocationPolicy
	cfg.Webhooks[0].ReinvocationPolicy = &never
	// The API server calls webhooks in the order of their configurations' names.
	if names := []string{pg.Name, cfg.Name}; !sort.StringsAreSorted(names) {
		t.Fatalf("configuration names %q do not order pullgate first", names)
	}
	env.Register(t, cfg)
	ns := env.Namespace(t, s, "enforce")

	env.WaitForDryRun(t, ns, e2e.NewPod("probe", env.UpstreamRef(app)), func(out *corev1.Pod, _ []string, err error) bool {
		return err == nil && len(out.Spec.Containers) == 2 && out.Spec.Containers[0].Image != env.UpstreamRef(app)
	})
	stored := create(t, ns, e2e.NewPod("app", env.UpstreamRef(app)))
	if len(stored.Spec.Containers) != 2 {
		t.Fatalf("stored pod has %d containers, want the sidecar injected", len(stored.Spec.Containers))
	}
	checkContainer(t, "container", stored.Spec.Containers[0], pinned(app, dApp), corev1.PullIfNotPresent)
	checkContainer(t, "injected sidecar", stored.Spec.Containers[1], pinned(sidecar, dSidecar), corev1.PullIfNotPresent)
	checkSecrets(t, stored, e2e.MirrorSecret)
	t.Logf("sidecar injector called %d times", calls.Load())

	// The audit trail of the create must show both of pullgate's invocations, the reinvocation
	// that rewrote the sidecar included.
	t.Run("audit annotations", func(t *testing.T) {
		ev := env.WaitForAuditEvent(t, func(ev e2e.AuditEvent) bool {
			return ev.Verb == "create" && ev.ObjectRef != nil && ev.ObjectRef.Namespace == ns && ev.ObjectRef.Name == "app"
		})
		var ours []string
		for k, v := range ev.Annotations {
			if strings.HasPrefix(k, e2e.WebhookName+"/") {
				ours = append(ours, k+"="+v)
			}
		}
		t.Logf("pullgate audit annotations: %q", ours)
		if !mentions(ours, app) {
			t.Errorf("no audit annotation records the rewrite of %s", app)
		}
		if !mentions(ours, sidecar) {
			t.Errorf("no audit annotation records the rewrite of the injected %s (see the API server log for "+
				"\"admission annotations are not allowd to be overwritten\")", sidecar)
		}
	})
}

// startSidecarInjector serves a mutating webhook that appends a container "sidecar" with image
// to pods that do not have one. It returns its URL and a call counter.
func startSidecarInjector(t *testing.T, image string) (string, *atomic.Int64) {
	t.Helper()
	kp, err := env.WebhookCA.Serving("sidecar-injector", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := kp.TLS()
	if err != nil {
		t.Fatal(err)
	}
	calls := &atomic.Int64{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
			http.Error(w, "bad AdmissionReview", http.StatusBadRequest)
			return
		}
		var pod corev1.Pod
		if err := json.Unmarshal(review.Request.Object.Raw, &pod); err != nil {
			http.Error(w, "bad pod", http.StatusBadRequest)
			return
		}
		resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
		injected := false
		for _, c := range pod.Spec.Containers {
			injected = injected || c.Name == "sidecar"
		}
		if !injected {
			patch, _ := json.Marshal([]map[string]any{{
				"op": "add", "path": "/spec/containers/-",
				"value": corev1.Container{Name: "sidecar", Image: image},
			}})
			pt := admissionv1.PatchTypeJSONPatch
			resp.Patch, resp.PatchType = patch, &pt
		}
		review.Request, review.Response = nil, resp
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(review)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL + "/inject", calls
}
