package chart

import (
	"fmt"
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
)

// TestPullSecretsRBAC: the webhook may get Secrets of exactly the names the policy injects
// (top level and rules), in every namespace, and nothing when it injects none.
func TestPullSecretsRBAC(t *testing.T) {
	t.Parallel()
	for file, want := range map[string][]string{
		"testdata/valid-prepull.yaml":      {"[] [secrets] [get] [harbor-pull]"},
		"testdata/valid-pull-secrets.yaml": {"[] [secrets] [get] [gpu-pull harbor-pull team-pull]"},
		"testdata/valid-reports.yaml":      nil,
	} {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			r := render(t, file)
			name := release + "-pull-secrets"
			var rules []string
			for _, cr := range all[*rbacv1.ClusterRole](r) {
				if cr.Name == name {
					for _, rule := range cr.Rules {
						rules = append(rules, fmt.Sprint(rule.APIGroups, rule.Resources, rule.Verbs, rule.ResourceNames))
					}
				}
			}
			bound := false
			for _, b := range all[*rbacv1.ClusterRoleBinding](r) {
				bound = bound || (b.Name == name && b.RoleRef.Name == name && len(b.Subjects) == 1 && b.Subjects[0].Name == release)
			}
			if !slices.Equal(rules, want) || bound != (want != nil) {
				t.Errorf("ClusterRole %s: rules %q bound %v, want %q", name, rules, bound, want)
			}
		})
	}
}
