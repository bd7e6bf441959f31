package report

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/pullgate/pullgate/pkg/policy"
)

// A report decides each namespace as admission does, its annotations included: a namespace
// that narrowed itself to audit (where the policy allows it) has warnings, not drift.
func TestFindingsHonourNamespaceOverrides(t *testing.T) {
	t.Parallel()
	pol, err := policy.Check([]byte(testPolicy + "tenantOverrides: {audit: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	enforce := map[string]string{policy.ModeLabel: "enforce"}
	nss := []Namespace{
		{Name: "narrowed", Labels: enforce, Annotations: map[string]string{policy.ModeAnnotation: "Audit"}},
		{Name: "widened", Labels: map[string]string{policy.ModeLabel: "audit"}, Annotations: map[string]string{policy.ModeAnnotation: "Enforce"}},
		{Name: "plain", Labels: enforce},
	}
	pods := []*corev1.Pod{newPod("narrowed", "a", "nginx:1.27"), newPod("widened", "a", "nginx:1.27"), newPod("plain", "a", "nginx:1.27")}
	s := Plan(pol, nss, pods, Options{})
	f := s.Finish(answers(s))
	want := map[string]struct {
		mode    string
		drifted int
	}{
		"narrowed": {string(policy.ModeAudit), 0},
		"widened":  {string(policy.ModeAudit), 0},
		"plain":    {string(policy.ModeEnforce), 1},
	}
	for _, ns := range f.Namespaces {
		if w := want[ns.Name]; ns.Mode != w.mode || ns.Drifted != w.drifted {
			t.Errorf("%s: mode %s, drifted %d; want %s, %d", ns.Name, ns.Mode, ns.Drifted, w.mode, w.drifted)
		}
	}
}
