package mutate_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/policy"
)

const tenantPolicy = `apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors:
  - registry: docker.io
    mirror: mirror.example.com/hub
  - registry: ghcr.io
    mirror: mirror.example.com/ghcr
resolve:
  enabled: false
tenantOverrides:
  %s
`

// Namespace annotations narrow what admission does as far as tenantOverrides allows: an
// allowed audit admits the pod unchanged, an allowed opt-out lets the pod's skip annotation
// count, an allowed mirror pick is carried in the plan; anything else is ignored with a
// warning that names the annotation and why, and the pod is never denied for it.
func TestHandlerNamespaceOverrides(t *testing.T) {
	t.Parallel()
	allowAll := mustCheck(t, strings.Replace(tenantPolicy, "%s", "{audit: true, podOptOut: true, mirrors: true}", 1))
	allowNone := mustCheck(t, strings.Replace(tenantPolicy, "%s", "{}", 1))
	const plain = `{"name":"p"}`
	const skipping = `{"name":"p","annotations":{"pullgate.dev/skip":"true"}}`
	tests := []struct {
		name        string
		pol         *policy.Compiled
		labels      string // pullgate.dev/mode label
		annotations map[string]string
		metadata    string
		allowed     string // the response's reason: the mode, or a skip message
		patched     bool
		warning     string // a warning that must be there ("" for none about the namespace)
		preferred   []string
	}{
		{name: "no annotations", pol: allowAll, labels: "enforce", metadata: plain, allowed: "enforce", patched: true},
		{name: "audit allowed", pol: allowAll, labels: "enforce", annotations: map[string]string{policy.ModeAnnotation: "Audit"}, metadata: plain, allowed: "audit"},
		{name: "audit not allowed", pol: allowNone, labels: "enforce", annotations: map[string]string{policy.ModeAnnotation: "Audit"}, metadata: plain, allowed: "enforce", patched: true,
			warning: `namespace apps: annotation pullgate.dev/mode="Audit" ignored: the policy does not let namespaces choose audit (tenantOverrides.audit)`},
		{name: "enforce never widens", pol: allowAll, labels: "audit", annotations: map[string]string{policy.ModeAnnotation: "Enforce"}, metadata: plain, allowed: "audit",
			warning: `namespace apps: annotation pullgate.dev/mode="Enforce" ignored: may only narrow Enforce to Audit; the namespace's mode is Audit`},
		{name: "pod opt-out allowed", pol: allowAll, labels: "enforce", annotations: map[string]string{policy.PodOptOutAnnotation: "true"}, metadata: skipping, allowed: mutate.SkipOptedOut},
		{name: "skip without the namespace's consent", pol: allowAll, labels: "enforce", metadata: skipping, allowed: "enforce", patched: true},
		{name: "pod opt-out not allowed", pol: allowNone, labels: "enforce", annotations: map[string]string{policy.PodOptOutAnnotation: "true"}, metadata: skipping, allowed: "enforce", patched: true,
			warning: `namespace apps: annotation pullgate.dev/allow-pod-opt-out="true" ignored: the policy does not let namespaces allow pod opt-out (tenantOverrides.podOptOut)`},
		{name: "mirror listed", pol: allowAll, labels: "enforce", annotations: map[string]string{policy.MirrorAnnotation: "mirror.example.com/ghcr"}, metadata: plain, allowed: "enforce", patched: true,
			preferred: []string{"ghcr.io"}},
		{name: "mirror not listed", pol: allowAll, labels: "enforce", annotations: map[string]string{policy.MirrorAnnotation: "registry.evil.example"}, metadata: plain, allowed: "enforce", patched: true,
			warning: `namespace apps: annotation pullgate.dev/mirror="registry.evil.example" ignored: is not a mirror the policy lists; only those under mirrors may be picked`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := mutate.StaticNamespace{Labels: map[string]string{policy.ModeLabel: tc.labels}, Annotations: tc.annotations}
			h := mutate.NewHandler(mutate.Handler{Policy: mutate.StaticPolicy{Policy: tc.pol}, Namespaces: ns})
			obj := []byte(`{"apiVersion":"v1","kind":"Pod","metadata":` + tc.metadata + `,"spec":{"containers":[{"name":"a","image":"nginx:1.27"}]}}`)
			resp := h.Handle(t.Context(), rawRequest(admissionv1.Create, obj))
			if !resp.Allowed {
				t.Fatalf("denied: %v", resp.Result)
			}
			if got := resp.Result.Message; got != tc.allowed && !strings.Contains(got, tc.allowed) {
				t.Errorf("allowed as %q, want %q", got, tc.allowed)
			}
			if (len(resp.Patch) > 0) != tc.patched {
				t.Errorf("patched %v, want %v", len(resp.Patch) > 0, tc.patched)
			}
			var about []string
			for _, w := range resp.Warnings {
				if strings.HasPrefix(w, "namespace apps: annotation") {
					about = append(about, w)
				}
			}
			if tc.warning == "" && len(about) > 0 || tc.warning != "" && !slices.Equal(about, []string{tc.warning}) {
				t.Errorf("warnings %q, want %q", about, tc.warning)
			}
			plan, err := mutate.NewPlan(tc.pol, mutate.Input{Operation: admissionv1.Create, Namespace: "apps", NamespaceLabels: ns.Labels, NamespaceAnnotations: ns.Annotations, Object: obj})
			if err != nil {
				t.Fatal(err)
			}
			var preferred []string
			for reg := range plan.PreferredMirrors {
				preferred = append(preferred, reg)
			}
			if !slices.Equal(preferred, tc.preferred) {
				t.Errorf("preferred mirrors for %v, want %v", preferred, tc.preferred)
			}
		})
	}
}

// TestOverrideMetric: each override is counted by annotation and outcome; a dry run is not.
// Not parallel: the counters are the process's.
func TestOverrideMetric(t *testing.T) {
	pol := mustCheck(t, strings.Replace(tenantPolicy, "%s", "{mirrors: true}", 1))
	reg := prometheus.NewRegistry()
	if err := mutate.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	ns := mutate.StaticNamespace{Labels: map[string]string{policy.ModeLabel: "enforce"},
		Annotations: map[string]string{policy.MirrorAnnotation: "mirror.example.com/hub,other.example.com", policy.ModeAnnotation: "Audit", policy.PodOptOutAnnotation: "true"}}
	h := mutate.NewHandler(mutate.Handler{Policy: mutate.StaticPolicy{Policy: pol}, Namespaces: ns})
	obj := []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"nginx:1.27"}]}}`)
	before := overrideCounts(t, reg)
	h.Handle(t.Context(), rawRequest(admissionv1.Create, obj))
	dry := rawRequest(admissionv1.Create, obj)
	dry.DryRun = new(true)
	h.Handle(t.Context(), dry)
	// A pod that opts out where its namespace allows it: the override is counted as applied.
	optOut := mutate.NewHandler(mutate.Handler{Policy: mutate.StaticPolicy{Policy: mustCheck(t, strings.Replace(tenantPolicy, "%s", "{podOptOut: true}", 1))}, Namespaces: ns})
	optOut.Handle(t.Context(), rawRequest(admissionv1.Create, []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{"pullgate.dev/skip":"true"}},"spec":{"containers":[{"name":"a","image":"nginx:1.27"}]}}`)))
	after := overrideCounts(t, reg)
	// The first policy allows mirrors only; the second pod opt-out only; both see all three.
	want := map[string]float64{
		"pullgate.dev/mirror/applied": 1, "pullgate.dev/mirror/not-listed": 1, "pullgate.dev/mirror/not-allowed": 1,
		"pullgate.dev/mode/not-allowed":              2,
		"pullgate.dev/allow-pod-opt-out/not-allowed": 1, "pullgate.dev/allow-pod-opt-out/applied": 1,
	}
	for k, n := range want {
		if d := after[k] - before[k]; d != n {
			t.Errorf("%s counted %v times, want %v", k, d, n)
		}
	}
}

func overrideCounts(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "pullgate_namespace_overrides_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			out[l["annotation"]+"/"+l["outcome"]] = m.GetCounter().GetValue()
		}
	}
	return out
}

func mustCheck(t *testing.T, doc string) *policy.Compiled {
	t.Helper()
	pol, err := policy.Check([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return pol
}
