package chart

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
)

// TestWebhookOptionRBAC: each policy option that needs more of the API server adds a ClusterRole
// of its own, bound to the webhook, with exactly that, and nothing when the option is off:
// get on Secrets of exactly the names the policy injects (top level and rules), and list/watch
// on nodes for platforms.fromNodes; for the controller, with policy.syncCredentials, namespaces
// list/watch, get/update/delete on the copies by name and create on Secrets.
func TestWebhookOptionRBAC(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file, role string
		want       []string
	}{
		{"testdata/valid-sync-credentials.yaml", "-controller-credentials", []string{
			"[] [namespaces] [list watch] []", "[] [secrets] [get update delete] [harbor-pull]", "[] [secrets] [create] []",
		}},
		{"testdata/valid-pull-secrets.yaml", "-controller-credentials", nil},
		{"testdata/valid-prepull.yaml", "-pull-secrets", []string{"[] [secrets] [get] [harbor-pull]"}},
		{"testdata/valid-pull-secrets.yaml", "-pull-secrets", []string{"[] [secrets] [get] [gpu-pull harbor-pull team-pull]"}},
		{"testdata/valid-reports.yaml", "-pull-secrets", nil},
		{"testdata/valid-pull-secrets.yaml", "-nodes", []string{"[] [nodes] [list watch] []"}},
		{"testdata/valid-prepull.yaml", "-nodes", nil},
	} {
		t.Run(tc.file+tc.role, func(t *testing.T) {
			t.Parallel()
			r := render(t, tc.file)
			name := release + tc.role
			var rules []string
			for _, cr := range all[*rbacv1.ClusterRole](r) {
				for _, rule := range cr.Rules {
					if cr.Name == name {
						rules = append(rules, fmt.Sprint(rule.APIGroups, rule.Resources, rule.Verbs, rule.ResourceNames))
					}
				}
			}
			subject := release
			if strings.HasPrefix(tc.role, "-controller") {
				subject = controllerName
			}
			bound := false
			for _, b := range all[*rbacv1.ClusterRoleBinding](r) {
				bound = bound || (b.Name == name && b.RoleRef.Name == name && len(b.Subjects) == 1 && b.Subjects[0].Name == subject)
			}
			if !slices.Equal(rules, tc.want) || bound != (tc.want != nil) {
				t.Errorf("ClusterRole %s: rules %q bound %v, want %q", name, rules, bound, tc.want)
			}
		})
	}
}
