//go:build e2e

package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullgate/pullgate/test/e2e"
)

// Scenario 9 (issue 7): with pullgate down, failurePolicy Ignore admits pods untouched; Fail
// rejects pods in opted-in namespaces, while kube-system and pullgate's own namespace, both
// labelled to opt in and excluded by name in the namespaceSelector as the chart does, are still
// admitted: pullgate's own pods can always come back. Down is either stopped (connections
// refused: the API server knows at once) or unresponsive (the process frozen: every call costs
// the API server its webhook timeout).
func TestWebhookDown(t *testing.T) {
	const app = "e2e/down:v1"
	env.PushImage(t, app)
	image := env.UpstreamRef(app)
	// kube-system opted in; each subtest adds its scope label, so that only the
	// kubernetes.io/metadata.name exclusion protects it.
	enforce := "enforce"
	env.LabelNamespace(t, metav1.NamespaceSystem, map[string]*string{e2e.ModeLabel: &enforce})

	table := &outageTable{}
	t.Cleanup(func() { t.Log("results:\n" + table.String()) })

	t.Run("stopped", func(t *testing.T) {
		t.Parallel()
		s := e2e.NewScope(t)
		w, cfg := env.Pullgate(t, s, env.DefaultPolicy(), admissionregistrationv1.Ignore)
		ns := env.Namespace(t, s, "enforce")
		own := env.CreateOwnNamespace(t, s, "enforce")
		env.WaitForMutation(t, ns, image)
		yes := "true"
		env.LabelNamespace(t, metav1.NamespaceSystem, map[string]*string{s.Label: &yes})

		// Pullgate up: its own namespace is not even sent. Pullgate would skip it itself (asked
		// directly, it does), but its skip counter shows the API server never asked.
		ownSkipped := e2e.Labels{"reason": "own-namespace"}
		before := metrics(t, w)
		stored := create(t, own, e2e.NewPod("while-up", image))
		checkContainer(t, "own namespace container, pullgate up", stored.Spec.Containers[0], image, "")
		if d := metrics(t, w).Sum("pullgate_admission_skipped_total", ownSkipped) - before.Sum("pullgate_admission_skipped_total", ownSkipped); d != 0 {
			t.Errorf("the API server sent a pod in pullgate's own namespace %s to pullgate (skipped %g times)", own, d)
		}
		req, err := e2e.PodRequest(own, e2e.NewPod("direct", image))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := w.Review(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		if !resp.Allowed || len(resp.Patch) > 0 {
			t.Errorf("asked directly about its own namespace, pullgate answered allowed=%v with patch %s", resp.Allowed, resp.Patch)
		}

		w.Stop()

		t.Run("Ignore admits untouched", func(t *testing.T) {
			for _, n := range []string{ns, own} {
				took, stored := timedCreate(t, n, e2e.NewPod("ignored", image))
				checkContainer(t, "container", stored.Spec.Containers[0], image, "")
				checkSecrets(t, stored)
				table.add(outageRow{"stopped", "Ignore", nsKind(n, own), "admitted untouched", took})
			}
		})

		t.Run("Fail", func(t *testing.T) {
			api := env.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
			cur, err := api.Get(t.Context(), cfg.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			fail := admissionregistrationv1.Fail
			cur.Webhooks[0].FailurePolicy = &fail
			if _, err := api.Update(t.Context(), cur, metav1.UpdateOptions{}); err != nil {
				t.Fatalf("switch to failurePolicy Fail: %v", err)
			}
			env.WaitForDryRun(t, ns, e2e.NewPod("probe", image), func(_ *corev1.Pod, _ []string, err error) bool {
				return err != nil
			})

			began := time.Now()
			_, err = env.Client.CoreV1().Pods(ns).Create(t.Context(), e2e.NewPod("rejected", image), metav1.CreateOptions{})
			took := time.Since(began)
			if err == nil {
				t.Fatal("pod admitted in an enforce namespace with pullgate down and failurePolicy Fail")
			}
			t.Logf("rejected in %s: %v", took.Round(time.Millisecond), err)
			if !strings.Contains(err.Error(), `failed calling webhook "`+e2e.WebhookName+`"`) {
				t.Errorf("rejection does not name the webhook call: %v", err)
			}
			table.add(outageRow{"stopped", "Fail", "enforce", "rejected: connection refused", took})

			pod := e2e.NewPod("down-"+s.ID, image)
			deleteLater(t, metav1.NamespaceSystem, pod.Name)
			took, stored := timedCreate(t, metav1.NamespaceSystem, pod)
			checkContainer(t, "kube-system container", stored.Spec.Containers[0], image, "")
			table.add(outageRow{"stopped", "Fail", "kube-system (enforce)", "admitted untouched", took})

			took, stored = timedCreate(t, own, e2e.NewPod("fail-closed", image))
			checkContainer(t, "own namespace container", stored.Spec.Containers[0], image, "")
			table.add(outageRow{"stopped", "Fail", "own (enforce)", "admitted untouched", took})

			create(t, env.Namespace(t, s, ""), e2e.NewPod("unlabelled", image))
		})
	})

	t.Run("unresponsive", func(t *testing.T) {
		t.Parallel()
		// One frozen pullgate behind two configurations: Ignore for one scope, Fail for the
		// other, so both are measured in one webhook timeout rather than two.
		ignore, fail := e2e.NewScope(t), e2e.NewScope(t)
		w := env.StartWebhook(t, e2e.WebhookOptions{Policy: env.DefaultPolicy(), Args: []string{"--namespace", fail.OwnNamespace}})
		env.Register(t, e2e.WebhookConfig("pullgate-"+ignore.ID, ignore, w.URL, w.CABundle, admissionregistrationv1.Ignore))
		env.Register(t, e2e.WebhookConfig("pullgate-"+fail.ID, fail, w.URL, w.CABundle, admissionregistrationv1.Fail))
		nsIgnore := env.Namespace(t, ignore, "enforce")
		nsFail := env.Namespace(t, fail, "enforce")
		own := env.CreateOwnNamespace(t, fail, "enforce")
		yes := "true"
		env.LabelNamespace(t, metav1.NamespaceSystem, map[string]*string{fail.Label: &yes})
		env.WaitForMutation(t, nsIgnore, image)
		env.WaitForMutation(t, nsFail, image)

		w.Freeze(t)
		const timeout = e2e.WebhookTimeoutSeconds * time.Second

		t.Run("Ignore waits out the timeout, then admits untouched", func(t *testing.T) {
			t.Parallel()
			logFrom := fileSize(t, env.APIServerLog)
			took, stored := timedCreate(t, nsIgnore, e2e.NewPod("ignored", image))
			checkContainer(t, "container", stored.Spec.Containers[0], image, "")
			checkSecrets(t, stored)
			table.add(outageRow{"unresponsive", "Ignore", "enforce", "admitted untouched", took})
			if took < timeout-500*time.Millisecond || took > 2*timeout {
				t.Errorf("create took %s; want about the webhook timeout, %s", took, timeout)
			}
			// The API server says it failed open, in the audit log and in its own log. This is
			// also what the fault tests' check of the API server log relies on.
			ev := env.WaitForAuditEvent(t, func(ev e2e.AuditEvent) bool {
				return ev.Verb == "create" && ev.ObjectRef != nil && ev.ObjectRef.Namespace == nsIgnore && ev.ObjectRef.Name == "ignored"
			})
			if !hasAnnotation(ev.Annotations, "failed-open.mutation.webhook.admission.k8s.io/", e2e.WebhookName) {
				t.Errorf("audit event of the create has no failed-open annotation naming %s: %v", e2e.WebhookName, ev.Annotations)
			}
			var lines []string
			err := e2e.Poll(t.Context(), 10*time.Second, func(context.Context) (bool, error) {
				lines = apiServerLines(t, logFrom, w.Addr)
				return len(lines) > 0, nil
			})
			if err != nil {
				t.Errorf("the API server log has no line about the failed call to %s: %v", w.Addr, err)
			}
			t.Logf("API server log:\n%s", strings.Join(lines, "\n"))
		})
		t.Run("Fail waits out the timeout, then rejects", func(t *testing.T) {
			t.Parallel()
			began := time.Now()
			_, err := env.Client.CoreV1().Pods(nsFail).Create(t.Context(), e2e.NewPod("rejected", image), metav1.CreateOptions{})
			took := time.Since(began)
			if err == nil {
				t.Fatal("pod admitted in an enforce namespace with pullgate unresponsive and failurePolicy Fail")
			}
			t.Logf("rejected in %s: %v", took.Round(time.Millisecond), err)
			if !strings.Contains(err.Error(), `failed calling webhook "`+e2e.WebhookName+`"`) {
				t.Errorf("rejection does not name the webhook call: %v", err)
			}
			if took < timeout-500*time.Millisecond || took > 2*timeout {
				t.Errorf("rejection took %s; want about the webhook timeout, %s", took, timeout)
			}
			table.add(outageRow{"unresponsive", "Fail", "enforce", "rejected: timeout", took})
		})
		// Not sent at all, so not delayed: well under the timeout.
		for _, n := range []struct{ kind, ns string }{{"kube-system (enforce)", metav1.NamespaceSystem}, {"own (enforce)", own}} {
			t.Run(n.kind, func(t *testing.T) {
				t.Parallel()
				pod := e2e.NewPod("frozen-"+fail.ID, image)
				deleteLater(t, n.ns, pod.Name)
				took, stored := timedCreate(t, n.ns, pod)
				checkContainer(t, n.kind+" container", stored.Spec.Containers[0], image, "")
				table.add(outageRow{"unresponsive", "Fail", n.kind, "admitted untouched", took})
				if took >= timeout/2 {
					t.Errorf("create took %s: the API server waited for pullgate", took)
				}
			})
		}
	})
}

// timedCreate is create, timed.
func timedCreate(t *testing.T, ns string, pod *corev1.Pod) (time.Duration, *corev1.Pod) {
	t.Helper()
	began := time.Now()
	stored := create(t, ns, pod)
	return time.Since(began), stored
}

func metrics(t *testing.T, w *e2e.Webhook) e2e.Metrics {
	t.Helper()
	m, err := w.Metrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func hasAnnotation(annotations map[string]string, keyPrefix, value string) bool {
	for k, v := range annotations {
		if strings.HasPrefix(k, keyPrefix) && v == value {
			return true
		}
	}
	return false
}

func nsKind(ns, own string) string {
	if ns == own {
		return "own (enforce)"
	}
	return "enforce"
}

type outageRow struct {
	down, failurePolicy, namespace, result string
	took                                   time.Duration
}

type outageTable struct {
	mu   sync.Mutex
	rows []outageRow
}

func (ot *outageTable) add(r outageRow) {
	ot.mu.Lock()
	defer ot.mu.Unlock()
	ot.rows = append(ot.rows, r)
}

func (ot *outageTable) String() string {
	ot.mu.Lock()
	defer ot.mu.Unlock()
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PULLGATE\tFAILUREPOLICY\tNAMESPACE\tRESULT\tCREATE")
	for _, r := range ot.rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.down, r.failurePolicy, r.namespace, r.result, r.took.Round(time.Millisecond))
	}
	tw.Flush()
	return b.String()
}
