package chart

import (
	"fmt"
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
)

// TestWarmRBAC: the controller gets cluster-wide list/watch on pods and nodes and Events in any
// namespace exactly when the policy warms some mirror, and not otherwise.
func TestWarmRBAC(t *testing.T) {
	t.Parallel()
	for file, want := range map[string]bool{
		"testdata/valid-warm.yaml":    true,
		"testdata/valid-prepull.yaml": false,
	} {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			checkWarm(t, render(t, file), want)
		})
	}
}

func checkWarm(t *testing.T, r rendered, want bool) {
	t.Helper()
	name := controllerName + "-warm"
	var crb *rbacv1.ClusterRoleBinding
	for _, b := range all[*rbacv1.ClusterRoleBinding](r) {
		if b.Name == name {
			crb = b
		}
	}
	if !want {
		if crb != nil {
			t.Errorf("warming is off, yet %s is rendered", name)
		}
		return
	}
	if crb == nil || crb.RoleRef.Name != name || len(crb.Subjects) != 1 || crb.Subjects[0].Name != controllerName {
		t.Fatalf("ClusterRoleBinding %s: %+v", name, crb)
	}
	cr := get[*rbacv1.ClusterRole](t, r, name)
	var got []string
	for _, rule := range cr.Rules {
		got = append(got, fmt.Sprint(rule.APIGroups, rule.Resources, rule.Verbs, rule.ResourceNames))
	}
	if wantRules := []string{"[] [pods] [list watch] []", "[] [nodes] [list watch] []", "[ events.k8s.io] [events] [create patch update] []"}; !slices.Equal(got, wantRules) {
		t.Errorf("ClusterRole %s rules %q, want %q", name, got, wantRules)
	}
}
