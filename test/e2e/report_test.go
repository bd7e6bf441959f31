//go:build e2e

package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/pullgate/pullgate/test/e2e"
)

// reportInterval is the controller's --report-interval in TestReports.
const reportInterval = 2 * time.Second

var (
	openReports = schema.GroupVersionResource{Group: "openreports.io", Version: "v1alpha1", Resource: "reports"}
	policyCRD   = schema.GroupVersionResource{Group: "wgpolicyk8s.io", Version: "v1alpha2", Resource: "policyreports"}
)

// TestReports (issue 15): pods in an unlabelled, an audit and an enforce namespace, and pods
// created in an enforce namespace while pullgate was stopped with failurePolicy Ignore.
// `webhook audit` counts what each would get; the controller writes the same results as reports
// (with no report CRDs it says so and keeps running; then wgpolicyk8s.io PolicyReports; then
// openreports.io Reports); labelling a namespace and restarting its pods clears its drift within
// one scan interval.
func TestReports(t *testing.T) {
	const app = "e2e/report:v1"
	env.PushImage(t, app)
	image := env.UpstreamRef(app)
	s := e2e.NewScope(t)
	w, cfg := env.Pullgate(t, s, env.DefaultPolicy(), admissionregistrationv1.Ignore)
	env.CreateOwnNamespace(t, s, "")
	ns := map[string]string{}
	for _, kind := range []string{"unlabelled", "audit", "enforce", "outage", "invalid", "nosecret"} {
		mode := kind
		if kind != "audit" && kind != "enforce" {
			mode = ""
		}
		ns[kind] = env.Namespace(t, s, mode)
	}
	// A namespace without the pull secret the policy injects: admission would warn, and so do
	// the audit and the reports (missing-pull-secret), with the same check.
	if err := env.Client.CoreV1().Secrets(ns["nosecret"]).Delete(t.Context(), e2e.MirrorSecret, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	env.LabelNamespace(t, ns["outage"], map[string]*string{e2e.ModeLabel: ptr("enforce")})
	env.WaitForMutation(t, ns["enforce"], image)
	for _, kind := range []string{"unlabelled", "audit", "enforce", "nosecret"} {
		createWorkload(t, ns[kind], "web", image, 2)
	}
	// The API server stores any non-empty image; pullgate cannot read this one.
	create(t, ns["invalid"], e2e.NewPod("odd", "Not/A:Valid:Reference"))
	w.Stop()
	createWorkload(t, ns["outage"], "web", image, 2)

	// webhook audit, one namespace at a time (other tests' pods share the API server).
	want := map[string]string{
		// namespace: PODS CHANGED DRIFTED REWRITE PIN PULL-POLICY PULL-SECRET UNPINNABLE
		"unlabelled": "2 2 0 2 2 2 2 0",
		"audit":      "2 2 0 2 2 2 2 0",
		"enforce":    "2 0 0 0 0 0 0 0",
		"outage":     "2 2 2 2 2 2 2 0",
		"invalid":    "1 1 0 0 0 0 1 1",
		"nosecret":   "2 2 0 2 2 2 2 0",
	}
	audited := map[string][]string{}
	for kind, n := range ns {
		table := audit(t, w.PolicyPath, s, "-n", n)
		if got := auditCounts(t, table, n); got != want[kind] {
			t.Errorf("webhook audit -n %s (%s): counts %q, want %q\n%s", n, kind, got, want[kind], table)
		}
		audited[kind] = auditResults(t, audit(t, w.PolicyPath, s, "-n", n, "-o", "json"), n)
		t.Logf("%s (%s):\n%s%s", kind, n, table, strings.Join(audited[kind], "\n"))
	}
	checkResults(t, "audit", audited, ns)

	// webhook explain on a pod of the cluster, with its namespace's labels from the cluster.
	for kind, want := range map[string][]string{
		"outage":     {"Pod/web-5d9f-0 in namespace " + ns["outage"], "mode Enforce", "rewrite: -> " + env.Mirror + "/e2e/report:v1 (mirror " + env.Mirror + " for " + env.Upstream + ")", "pin: -> " + env.Mirror + "/e2e/report:v1@sha256:", "pull-policy: Always -> IfNotPresent", "pull-secret: spec.imagePullSecrets gets mirror-pull"},
		"unlabelled": {"not opted in: the namespace has no pullgate.dev/mode=enforce|audit label"},
		"enforce":    {"unchanged: already as the policy wants"},
	} {
		out, err := exec.CommandContext(t.Context(), env.Opts.Webhook, "explain", "--kubeconfig", env.Kubeconfig, "--policy", w.PolicyPath, "-n", ns[kind], "pod/web-5d9f-0").CombinedOutput()
		for _, s := range want {
			if err != nil || !strings.Contains(string(out), s) {
				t.Errorf("webhook explain pod/web-5d9f-0 -n %s (%s): %v, output lacks %q:\n%s", ns[kind], kind, err, s, out)
			}
		}
		t.Logf("webhook explain pod/web-5d9f-0 -n %s (%s):\n%s", ns[kind], kind, out)
	}

	dyn := dynamic.NewForConfigOrDie(env.Config)
	ctrl := env.StartController(t, w.PolicyPath, s.OwnNamespace, "--reports", "--report-interval", reportInterval.String())

	t.Run("no report API", func(t *testing.T) {
		err := e2e.Poll(t.Context(), 30*time.Second, func(context.Context) (bool, error) {
			return strings.Contains(readLog(t, ctrl), "Reports not written"), nil
		})
		if err != nil {
			t.Fatalf("the controller never said it writes no reports: %v\n%s", err, e2e.Tail(ctrl.LogPath, 20))
		}
		time.Sleep(3 * reportInterval)
		select {
		case <-ctrl.Done():
			t.Fatalf("the controller exited without a report API: %v", ctrl.Err())
		default:
		}
		if n := strings.Count(readLog(t, ctrl), "Reports not written"); n != 1 {
			t.Errorf("'Reports not written' logged %d times in 4 scans, want once", n)
		}
	})
	check := func(t *testing.T, gvr schema.GroupVersionResource) {
		for kind, n := range ns {
			var got []string
			err := e2e.Poll(t.Context(), 30*time.Second, func(ctx context.Context) (bool, error) {
				u, err := dyn.Resource(gvr).Namespace(n).Get(ctx, "pullgate", metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					got = nil
					return audited[kind] == nil, nil
				}
				if err != nil {
					return false, err
				}
				raw, _ := json.Marshal(u.Object)
				got = auditResults(t, raw, n)
				return slices.Equal(got, audited[kind]), nil
			})
			if err != nil {
				t.Errorf("%s of %s (%s): %v\ngot:\n%s\nwant (webhook audit):\n%s", gvr.Resource, n, kind, err, strings.Join(got, "\n"), strings.Join(audited[kind], "\n"))
			}
		}
	}
	t.Run("wgpolicyk8s only", func(t *testing.T) {
		env.InstallCRDs(t, filepath.Join(e2e.ModuleDir(t, "github.com/kyverno/kyverno@v1.19.1"), "config", "crds", "policyreport"))
		check(t, policyCRD)
	})
	t.Run("openreports", func(t *testing.T) {
		env.InstallCRDs(t, filepath.Join(e2e.ModuleDir(t, "github.com/openreports/reports-api@v0.2.1"), "config", "crd"))
		check(t, openReports)
		// The cluster summary: one result per namespace and rule.
		var raw []byte
		err := e2e.Poll(t.Context(), 10*time.Second, func(ctx context.Context) (bool, error) {
			u, err := dyn.Resource(schema.GroupVersionResource{Group: "openreports.io", Version: "v1alpha1", Resource: "clusterreports"}).Get(ctx, "pullgate", metav1.GetOptions{})
			if err != nil {
				return false, nil //nolint:nilerr // not written yet: the poll tries again
			}
			raw, _ = json.Marshal(u.Object)
			return bytes.Contains(raw, []byte(`"name":"`+ns["outage"]+`"`)), nil
		})
		if err != nil {
			t.Errorf("the ClusterReport does not name %s: %v\n%s", ns["outage"], err, raw)
		}
	})

	t.Run("opt in and restart clears drift", func(t *testing.T) {
		// pullgate back, on the same configuration.
		w2 := env.StartWebhook(t, e2e.WebhookOptions{PolicyPath: w.PolicyPath, Args: []string{"--namespace", s.OwnNamespace}})
		patch := fmt.Sprintf(`[{"op":"replace","path":"/webhooks/0/clientConfig/url","value":%q}]`, w2.URL)
		if _, err := env.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Patch(t.Context(), cfg.Name, types.JSONPatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		env.WaitForMutation(t, ns["enforce"], image)
		// Opting in turns what the unlabelled namespace would get into drift.
		env.LabelNamespace(t, ns["unlabelled"], map[string]*string{e2e.ModeLabel: ptr("enforce")})
		err := e2e.Poll(t.Context(), 2*reportInterval+5*time.Second, func(ctx context.Context) (bool, error) {
			u, err := dyn.Resource(openReports).Namespace(ns["unlabelled"]).Get(ctx, "pullgate", metav1.GetOptions{})
			if err != nil {
				return false, nil //nolint:nilerr // not written yet: the poll tries again
			}
			raw, _ := json.Marshal(u.Object)
			return bytes.Contains(raw, []byte(`"cause":"not-admitted-by-pullgate"`)), nil
		})
		if err != nil {
			t.Errorf("labelled enforce, %s's report never showed drift: %v", ns["unlabelled"], err)
		}
		for _, kind := range []string{"unlabelled", "outage"} {
			restart(t, ns[kind], "web", image, 2)
		}
		restarted := time.Now()
		for _, kind := range []string{"unlabelled", "outage"} {
			err := e2e.Poll(t.Context(), 30*time.Second, func(ctx context.Context) (bool, error) {
				_, err := dyn.Resource(openReports).Namespace(ns[kind]).Get(ctx, "pullgate", metav1.GetOptions{})
				return apierrors.IsNotFound(err), nil
			})
			took := time.Since(restarted)
			t.Logf("%s (%s): drift cleared %s after its pods were restarted", kind, ns[kind], took.Round(10*time.Millisecond))
			if err != nil || took > reportInterval+time.Second {
				t.Errorf("%s (%s): report still there %s after the restart (interval %s): %v", kind, ns[kind], took, reportInterval, err)
			}
			if table := audit(t, w.PolicyPath, s, "-n", ns[kind]); auditCounts(t, table, ns[kind]) != "2 0 0 0 0 0 0 0" {
				t.Errorf("webhook audit after the restart:\n%s", table)
			}
		}
	})
}

// checkResults: what each namespace's results must say, by rule and result.
func checkResults(t *testing.T, what string, got map[string][]string, ns map[string]string) {
	t.Helper()
	for kind, want := range map[string][]string{
		"unlabelled": {"warn pin", "warn pull-policy", "warn pull-secret", "warn rewrite"},
		"audit":      {"warn pin", "warn pull-policy", "warn pull-secret", "warn rewrite"},
		"enforce":    nil,
		"outage":     {"fail drift", "fail drift", "fail drift", "fail not-from-mirror"},
		"invalid":    {"warn pull-secret", "warn unpinnable"},
		"nosecret":   {"warn missing-pull-secret", "warn pin", "warn pull-policy", "warn pull-secret", "warn rewrite"},
	} {
		var rules []string
		for _, r := range got[kind] {
			f := strings.Fields(r)
			rules = append(rules, f[0]+" "+f[1])
			if kind != "invalid" && (!strings.Contains(r, "Deployment/web") || !strings.Contains(r, "pods=2")) {
				t.Errorf("%s %s (%s): result %q is not about Deployment web's 2 pods", what, ns[kind], kind, r)
			}
			if f[1] == "missing-pull-secret" && !strings.Contains(r, "secret="+e2e.MirrorSecret) {
				t.Errorf("%s %s (%s): %q does not name the secret %s", what, ns[kind], kind, r, e2e.MirrorSecret)
			}
			if kind == "outage" && !strings.Contains(r, "cause=not-admitted-by-pullgate") {
				t.Errorf("%s %s (%s): drift %q without cause not-admitted-by-pullgate", what, ns[kind], kind, r)
			}
		}
		slices.Sort(rules)
		if !slices.Equal(rules, want) {
			t.Errorf("%s %s (%s): results %q, want %q", what, ns[kind], kind, rules, want)
		}
	}
}

func ptr(s string) *string { return &s }

// createWorkload creates n pods as a Deployment's ReplicaSet would (no controller-manager runs).
func createWorkload(t *testing.T, ns, name, image string, n int) {
	t.Helper()
	for i := range n {
		pod := e2e.NewPod(fmt.Sprintf("%s-5d9f-%d", name, i), image)
		// Not the policy's IfNotPresent: a pull-policy change owed.
		pod.Spec.Containers[0].ImagePullPolicy = corev1.PullAlways
		pod.Labels = map[string]string{"app": name, "pod-template-hash": "5d9f"}
		yes := true
		pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: name + "-5d9f", UID: types.UID(fmt.Sprintf("00000000-0000-0000-0000-%012d", i)), Controller: &yes}}
		create(t, ns, pod)
	}
}

// restart deletes the workload's pods and creates them again, as a rollout restart would.
func restart(t *testing.T, ns, name, image string, n int) {
	t.Helper()
	for i := range n {
		if err := env.Client.CoreV1().Pods(ns).Delete(t.Context(), fmt.Sprintf("%s-5d9f-%d", name, i), metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
			t.Fatal(err)
		}
	}
	err := e2e.Poll(t.Context(), 10*time.Second, func(ctx context.Context) (bool, error) {
		l, err := env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(l.Items) == 0, err
	})
	if err != nil {
		t.Fatal(err)
	}
	createWorkload(t, ns, name, image, n)
}

func readLog(t *testing.T, p *e2e.Process) string {
	raw, err := os.ReadFile(p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// audit runs `webhook audit` on the suite's API server and returns its stdout.
func audit(t *testing.T, policyPath string, s e2e.Scope, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), env.Opts.Webhook, append([]string{"audit", "--kubeconfig", env.Kubeconfig, "--policy", policyPath, "--pullgate-namespace", s.OwnNamespace}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("webhook audit %q: %v\n%s", args, err, stderr.String())
	}
	return out
}

// auditCounts is the table row of ns: PODS CHANGED DRIFTED REWRITE PIN PULL-POLICY PULL-SECRET
// UNPINNABLE.
func auditCounts(t *testing.T, table []byte, ns string) string {
	t.Helper()
	for _, line := range strings.Split(string(table), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[0] != ns {
			continue
		}
		// The mode is one or more words ("not opted in"); the counts follow it.
		for k := 1; k+8 <= len(f); k++ {
			if isNumber(f[k]) {
				return strings.Join(f[k:k+8], " ")
			}
		}
	}
	return "(no row)"
}

func isNumber(s string) bool { _, err := fmt.Sscan(s, new(int)); return err == nil }

// auditResults are the results about namespace ns, one line each, sorted, from webhook audit's
// List or from one report object (openreports or wgpolicyk8s: the same result fields).
func auditResults(t *testing.T, raw []byte, ns string) []string {
	t.Helper()
	type result struct {
		Rule, Result string
		Resources    []corev1.ObjectReference
		Properties   map[string]string
	}
	type obj struct {
		Kind     string
		Metadata metav1.ObjectMeta
		Results  []result
	}
	var doc struct {
		obj
		Items []obj
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("decoding reports: %v\n%s", err, raw)
	}
	objs := doc.Items
	if doc.Kind != "List" {
		objs = []obj{doc.obj}
	}
	var out []string
	for _, o := range objs {
		if o.Metadata.Namespace != ns {
			continue
		}
		for _, r := range o.Results {
			p := r.Properties
			line := fmt.Sprintf("%s %s", r.Result, r.Rule)
			for _, s := range r.Resources {
				line += fmt.Sprintf(" %s/%s", s.Kind, s.Name)
			}
			for _, k := range []string{"field", "image", "was", "secret", "becomes", "change", "cause", "pods", "mode"} {
				if p[k] != "" {
					line += " " + k + "=" + p[k]
				}
			}
			out = append(out, line)
		}
	}
	slices.Sort(out)
	return out
}
