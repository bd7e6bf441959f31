package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stypes "k8s.io/apimachinery/pkg/types"
)

// WebhookOptions configures StartWebhook.
type WebhookOptions struct {
	// Policy is written to PolicyPath (default: <test dir>/policy-N.yaml) unless PolicyYAML is set.
	Policy     Policy
	PolicyYAML []byte
	PolicyPath string
	// CertDir holds tls.crt and tls.key. Empty: the harness issues a certificate for 127.0.0.1
	// from WebhookCA. A caller that brings its own (cert-manager) sets CABundle too.
	CertDir  string
	CABundle []byte
	// Args are appended to the serve command line.
	Args []string
}

// Webhook is a running `webhook serve`.
type Webhook struct {
	// URL is what a MutatingWebhookConfiguration's clientConfig.url points at.
	URL string
	// Addr is host:port of the HTTPS server; ProbeAddr serves /healthz and /readyz,
	// MetricsAddr /metrics.
	Addr, ProbeAddr, MetricsAddr string
	PolicyPath                   string
	CertDir                      string
	CABundle                     []byte
	Process                      *Process
}

var webhookSeq atomic.Int64

// StartWebhook starts the pullgate binary with a policy and waits until its probe says ready and
// its HTTPS port presents a certificate the CA bundle verifies. It is stopped when t ends; on
// failure the tail of its log is printed.
func (e *Env) StartWebhook(t testing.TB, o WebhookOptions) *Webhook {
	t.Helper()
	dir := e.TestDir(t)
	n := strconv.FormatInt(webhookSeq.Add(1), 10)
	w := &Webhook{PolicyPath: o.PolicyPath, CertDir: o.CertDir, CABundle: o.CABundle}
	if w.PolicyPath == "" {
		w.PolicyPath = filepath.Join(dir, "policy-"+n+".yaml")
	}
	switch {
	case o.PolicyYAML != nil:
		if err := os.WriteFile(w.PolicyPath, o.PolicyYAML, 0o644); err != nil {
			t.Fatalf("write policy: %v", err)
		}
	case o.Policy.Kind != "":
		if err := WritePolicy(w.PolicyPath, o.Policy); err != nil {
			t.Fatal(err)
		}
	}
	if w.CertDir == "" {
		w.CertDir = filepath.Join(dir, "certs-"+n)
		kp, err := e.WebhookCA.Serving("pullgate-e2e", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		if err := kp.WriteFiles(w.CertDir, "tls.crt", "tls.key"); err != nil {
			t.Fatal(err)
		}
		w.CABundle = e.WebhookCA.CertPEM
	}

	p, err := startWithPorts(func() (*Process, error) {
		ports, err := FreePorts(3)
		if err != nil {
			return nil, err
		}
		w.Addr = "127.0.0.1:" + strconv.Itoa(ports[0])
		w.MetricsAddr = "127.0.0.1:" + strconv.Itoa(ports[1])
		w.ProbeAddr = "127.0.0.1:" + strconv.Itoa(ports[2])
		w.URL = "https://" + w.Addr + MutatePath
		args := []string{"serve",
			"--policy", w.PolicyPath,
			"--cert-dir", w.CertDir,
			"--port", strconv.Itoa(ports[0]),
			"--metrics-bind-address", w.MetricsAddr,
			"--health-probe-bind-address", w.ProbeAddr,
			// Every admission decision in the log: it is what a failed test is debugged from.
			"-v", "1",
			// Namespace labels (pullgate.dev/mode, rule selectors) come from an informer.
			"--kubeconfig", e.Kubeconfig,
		}
		args = append(args, o.Args...)
		p, err := e.startProcess("webhook-"+n, filepath.Join(dir, "webhook-"+n+".log"), e.Opts.Webhook, args...)
		if err != nil {
			return nil, err
		}
		err = WaitReady(t.Context(), p, 30*time.Second, func(ctx context.Context) error {
			if err := httpOK(ctx, http.DefaultClient, "http://"+w.ProbeAddr+"/readyz"); err != nil {
				return err
			}
			return tlsOK(ctx, w.Addr, w.CABundle)
		})
		if err != nil {
			p.Stop(5 * time.Second)
			return nil, err
		}
		return p, nil
	})
	if err != nil {
		t.Fatalf("start webhook: %v", err)
	}
	w.Process = p
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last lines of %s:\n%s", p.LogPath, Tail(p.LogPath, 40))
		}
		p.Stop(5 * time.Second)
	})
	return w
}

// Stop stops the webhook process now (SIGTERM, then SIGKILL after 5s).
func (w *Webhook) Stop() { w.Process.Stop(5 * time.Second) }

// Freeze stops the webhook process with SIGSTOP: its port still accepts connections (the kernel
// completes the handshake) but nothing answers, like a webhook on a wedged node. It is resumed
// with SIGCONT when t ends, before the process is stopped.
func (w *Webhook) Freeze(t testing.TB) {
	t.Helper()
	pid := w.Process.Pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP webhook: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	// kill returns once the signal is queued; each thread stops when it next notices it, and a
	// request arriving in between would still be answered. Wait until every thread has stopped.
	err := Poll(t.Context(), 10*time.Second, func(context.Context) (bool, error) { return allStopped(pid) })
	if err != nil {
		t.Fatalf("webhook %d not stopped after SIGSTOP: %v", pid, err)
	}
}

// allStopped reports whether every thread of pid is in the stopped state ("T" in its stat).
func allStopped(pid int) (bool, error) {
	stats, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil {
		return false, err
	}
	if len(stats) == 0 {
		return false, fmt.Errorf("process %d has no threads: it has exited", pid)
	}
	for _, path := range stats {
		b, err := os.ReadFile(path) //nolint:gosec // G304: /proc of our own child
		if errors.Is(err, os.ErrNotExist) {
			continue // a thread that ended meanwhile has nothing to stop
		}
		if err != nil {
			return false, err
		}
		// "pid (comm) S ...": the state follows the last ')', as comm may hold one.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) {
			return false, fmt.Errorf("unexpected %s: %q", path, b)
		}
		if b[i+2] != 'T' {
			return false, nil
		}
	}
	return true, nil
}

// ReplacePolicy writes p to a temporary file beside the policy and renames it over the policy:
// an atomic replace, as editors and config-management tools do.
func (w *Webhook) ReplacePolicy(p Policy) error {
	tmp := w.PolicyPath + ".tmp"
	if err := WritePolicy(tmp, p); err != nil {
		return err
	}
	if err := os.Rename(tmp, w.PolicyPath); err != nil {
		return fmt.Errorf("rename policy: %w", err)
	}
	return nil
}

// WebhookConfig returns the MutatingWebhookConfiguration the Helm chart renders, pointed at url,
// plus one selector term: namespaces must carry the scope's label, so that tests sharing the API
// server never call each other's webhooks. Like the chart, it never sends kube-system or
// pullgate's own namespace (s.OwnNamespace), whatever their labels.
func WebhookConfig(name string, s Scope, url string, caBundle []byte, fp admissionregistrationv1.FailurePolicyType) *admissionregistrationv1.MutatingWebhookConfiguration {
	sideEffects := admissionregistrationv1.SideEffectClassNoneOnDryRun
	reinvoke := admissionregistrationv1.IfNeededReinvocationPolicy
	timeout := int32(WebhookTimeoutSeconds)
	scope := admissionregistrationv1.NamespacedScope
	if fp == "" {
		fp = admissionregistrationv1.Ignore
	}
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{s.Label: "true"}},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    WebhookName,
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caBundle},
			SideEffects:             &sideEffects,
			AdmissionReviewVersions: []string{"v1"},
			ReinvocationPolicy:      &reinvoke,
			TimeoutSeconds:          &timeout,
			FailurePolicy:           &fp,
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule: admissionregistrationv1.Rule{
					APIGroups:   []string{""},
					APIVersions: []string{"v1"},
					Resources:   []string{"pods", "pods/ephemeralcontainers"},
					Scope:       &scope,
				},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: ModeLabel, Operator: metav1.LabelSelectorOpIn, Values: []string{"enforce", "audit"}},
				{Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{metav1.NamespaceSystem, s.OwnNamespace}},
				{Key: s.Label, Operator: metav1.LabelSelectorOpExists},
			}},
		}},
	}
}

// Register creates cfg and deletes it when t ends.
func (e *Env) Register(t testing.TB, cfg *admissionregistrationv1.MutatingWebhookConfiguration) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	api := e.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	out, err := api.Create(t.Context(), cfg, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create MutatingWebhookConfiguration %s: %v", cfg.Name, err)
	}
	t.Cleanup(func() {
		// t.Context is already cancelled in Cleanup.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := api.Delete(ctx, cfg.Name, metav1.DeleteOptions{}); err != nil {
			t.Logf("delete MutatingWebhookConfiguration %s: %v", cfg.Name, err)
		}
	})
	return out
}

// Pullgate starts a webhook with policy p and own namespace s.OwnNamespace (what the chart's
// POD_NAMESPACE gives it), registers it for scope s with failure policy fp and returns it. It
// does not wait for the API server to call it: see WaitForMutation.
func (e *Env) Pullgate(t testing.TB, s Scope, p Policy, fp admissionregistrationv1.FailurePolicyType) (*Webhook, *admissionregistrationv1.MutatingWebhookConfiguration) {
	t.Helper()
	w := e.StartWebhook(t, WebhookOptions{Policy: p, Args: []string{"--namespace", s.OwnNamespace}})
	cfg := e.Register(t, WebhookConfig("pullgate-"+s.ID, s, w.URL, w.CABundle, fp))
	return w, cfg
}

// PodRequest is the AdmissionRequest the API server would send for creating pod in ns.
func PodRequest(ns string, pod *corev1.Pod) (admissionv1.AdmissionRequest, error) {
	raw, err := json.Marshal(pod)
	if err != nil {
		return admissionv1.AdmissionRequest{}, fmt.Errorf("marshal pod: %w", err)
	}
	return admissionv1.AdmissionRequest{
		UID:       k8stypes.UID(fmt.Sprintf("e2e-%d", time.Now().UnixNano())),
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Name:      pod.Name,
		Namespace: ns,
		Operation: admissionv1.Create,
		UserInfo:  authenticationv1.UserInfo{Username: "e2e-direct"},
		Object:    runtime.RawExtension{Raw: raw},
	}, nil
}

// Review posts req to the webhook directly, bypassing the API server, and returns its response.
// Tests use it to show what pullgate itself answered when the API server's result is puzzling.
func (w *Webhook) Review(ctx context.Context, req admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, error) {
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request:  &req,
	})
	if err != nil {
		return nil, fmt.Errorf("marshal review: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(w.CABundle)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("POST %s: %w", w.URL, err)
	}
	defer resp.Body.Close()
	var out admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("decode review (%s): %w", resp.Status, err)
	}
	if out.Response == nil {
		return nil, fmt.Errorf("review without a response (%s)", resp.Status)
	}
	return out.Response, nil
}
