package chart

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// TestReportsRBAC: the controller gets cluster-wide list/watch on pods and namespaces and
// read/write on both report APIs, and runs with --reports, exactly when controller.reports is
// enabled, and not otherwise.
func TestReportsRBAC(t *testing.T) {
	t.Parallel()
	for file, want := range map[string]bool{
		"testdata/valid-reports.yaml": true,
		"testdata/valid-prepull.yaml": false,
		"testdata/valid-warm.yaml":    false,
	} {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			checkReports(t, render(t, file), want, nil)
		})
	}
	// With injected pull secrets and platforms.fromNodes, the scan checks as admission does:
	// get on exactly those Secrets' names, and list/watch nodes; nothing more.
	t.Run("pull secrets and node platforms", func(t *testing.T) {
		t.Parallel()
		checkReports(t, render(t, "testdata/valid-reports.yaml", "testdata/valid-pull-secrets.yaml"), true, []string{
			"[] [secrets] [get] [gpu-pull harbor-pull team-pull]",
			"[] [nodes] [list watch] []",
		})
	})
}

func checkReports(t *testing.T, r rendered, want bool, extra []string) {
	t.Helper()
	name := controllerName + "-reports"
	d := get[*appsv1.Deployment](t, r, controllerName)
	args := strings.Join(d.Spec.Template.Spec.Containers[0].Args, " ")
	if got := strings.Contains(args, "--reports --report-interval=2m"); got != want {
		t.Errorf("reports enabled %v, controller args %q", want, args)
	}
	rules, bound := clusterRules(r, name)
	if !want {
		if bound || rules != nil {
			t.Errorf("reports are off, yet %s is rendered", name)
		}
		return
	}
	wantRules := []string{
		"[] [pods namespaces] [list watch] []",
		"[openreports.io] [reports clusterreports] [get list watch create update delete] []",
		"[wgpolicyk8s.io] [policyreports clusterpolicyreports] [get list watch create update delete] []",
	}
	wantRules = append(wantRules, extra...)
	if !bound || !slices.Equal(rules, wantRules) {
		t.Errorf("ClusterRole %s bound to the controller: %v, rules %q, want %q", name, bound, rules, wantRules)
	}
}

// clusterRules are the rules of the ClusterRole name, one string each, and whether a
// ClusterRoleBinding of that name binds exactly it to the controller's ServiceAccount.
func clusterRules(r rendered, name string) (rules []string, bound bool) {
	for _, b := range all[*rbacv1.ClusterRoleBinding](r) {
		bound = bound || (b.Name == name && b.RoleRef.Name == name && len(b.Subjects) == 1 && b.Subjects[0].Name == controllerName)
	}
	for _, cr := range all[*rbacv1.ClusterRole](r) {
		for _, rule := range cr.Rules {
			if cr.Name == name {
				rules = append(rules, fmt.Sprint(rule.APIGroups, rule.Resources, rule.Verbs, rule.ResourceNames))
			}
		}
	}
	return rules, bound
}
