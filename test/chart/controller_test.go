package chart

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

const controllerName = release + "-controller"

// checkController: with controller.enabled, the controller is a Deployment of its own, with its
// own ServiceAccount bound to a Role in the release namespace that grants what pre-pulling needs
// and nothing cluster-wide; its pods are not selected by the webhook's Deployment, PDB or
// Service. Without it, none of these objects exist.
func checkController(t *testing.T, r rendered) {
	t.Helper()
	if !r.bool(t, "controller.enabled") {
		for _, o := range r.objs {
			if strings.HasSuffix(o.GetName(), "-controller") {
				t.Errorf("controller disabled, yet %T %s is rendered", o, o.GetName())
			}
		}
		return
	}
	d := get[*appsv1.Deployment](t, r, controllerName)
	pod := d.Spec.Template.Spec
	if want := int32(r.int(t, "controller.replicas")); d.Spec.Replicas == nil || *d.Spec.Replicas != want {
		t.Errorf("controller replicas = %v, want %d", d.Spec.Replicas, want)
	}
	webhook := get[*appsv1.Deployment](t, r, release)
	wsel, _ := metav1.LabelSelectorAsSelector(webhook.Spec.Selector)
	if wsel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("the webhook's selector %v selects the controller pods %v", webhook.Spec.Selector, d.Spec.Template.Labels)
	}
	if pod.ServiceAccountName == webhook.Spec.Template.Spec.ServiceAccountName {
		t.Errorf("the controller shares the webhook's ServiceAccount %s", pod.ServiceAccountName)
	}
	c := pod.Containers[0]
	args := strings.Join(c.Args, " ")
	for _, want := range []string{"controller ", "--policy=/etc/pullgate/policy.yaml", "--leader-elect=true", "--owner-deployment=" + controllerName, "--sleeper-image=" + c.Image, "--name-prefix=" + release + "-prepull-"} {
		if !strings.Contains(args, want) {
			t.Errorf("controller args %q lack %q", args, want)
		}
	}
	if sc := c.SecurityContext; sc == nil || !isTrue(sc.ReadOnlyRootFilesystem) || !isTrue(sc.RunAsNonRoot) {
		t.Errorf("controller securityContext not hardened: %+v", sc)
	}
	role := get[*rbacv1.Role](t, r, controllerName)
	allowed := map[string][]string{
		"apps/daemonsets":            {"get", "list", "watch", "create", "update", "delete"},
		"apps/daemonsets/status":     {"update"},
		"apps/deployments":           {"get"},
		"/pods":                      {"get", "list", "watch"},
		"/events":                    {"create", "patch", "update"},
		"coordination.k8s.io/leases": {"get", "list", "watch", "create", "update", "patch", "delete"},
		"/secrets":                   {"get", "watch"},
	}
	for _, rule := range role.Rules {
		for _, g := range rule.APIGroups {
			for _, res := range rule.Resources {
				want, ok := allowed[g+"/"+res]
				if g == "events.k8s.io" {
					want, ok = allowed["/events"]
				}
				if !ok || !slices.Equal(rule.Verbs, want) {
					t.Errorf("controller Role grants %v on %s/%s", rule.Verbs, g, res)
				}
				if (res == "deployments" && fmt.Sprint(rule.ResourceNames) != "["+controllerName+"]") || (res == "secrets" && len(rule.ResourceNames) == 0) {
					t.Errorf("controller Role: %s not limited by name: %v", res, rule.ResourceNames)
				}
			}
		}
	}
	rb := get[*rbacv1.RoleBinding](t, r, controllerName)
	if rb.RoleRef.Name != role.Name || len(rb.Subjects) != 1 || rb.Subjects[0].Name != pod.ServiceAccountName {
		t.Errorf("controller RoleBinding does not bind its Role to its ServiceAccount: %+v", rb)
	}
	checkStartupTaints(t, r, pod.ServiceAccountName, args)
}

// checkStartupTaints: only when a policy.prepull group sets startupTaint does the controller get
// --startup-taints and a ClusterRole with get, list, watch and patch on nodes and Events (a
// node's Events live in the default namespace) and nothing else; otherwise nothing cluster-wide
// binds it.
func checkStartupTaints(t *testing.T, r rendered, sa, args string) {
	t.Helper()
	startup := false
	groups, _ := r.lookup(t, "policy.prepull").([]any)
	for _, g := range groups {
		if m, ok := g.(map[string]any); ok && m["startupTaint"] != nil {
			startup = true
		}
	}
	if got := strings.Contains(args, "--startup-taints"); got != startup {
		t.Errorf("controller args %q: --startup-taints is %v, want %v (a group with startupTaint: %v)", args, got, startup, startup)
	}
	nodes := controllerName + "-nodes"
	var bound []string
	for _, crb := range all[*rbacv1.ClusterRoleBinding](r) {
		if crb.Name == controllerName+"-warm" || crb.Name == controllerName+"-reports" {
			continue // mirror warming's and reports' own bindings: see checkWarm, checkReports
		}
		for _, s := range crb.Subjects {
			if s.Name == sa && crb.RoleRef.Name == nodes {
				bound = append(bound, crb.Name)
			}
		}
	}
	if !startup {
		for _, cr := range all[*rbacv1.ClusterRole](r) {
			if cr.Name == nodes {
				t.Errorf("ClusterRole %s rendered without a group that sets startupTaint: the controller needs no node rights then", nodes)
			}
		}
		return
	}
	if fmt.Sprint(bound) != "["+nodes+"]" {
		t.Fatalf("ClusterRoleBindings of %s to the controller: %v, want [%s]", nodes, bound, nodes)
	}
	cr := get[*rbacv1.ClusterRole](t, r, nodes)
	var got []string
	for _, rule := range cr.Rules {
		got = append(got, fmt.Sprint(rule.APIGroups, rule.Resources, rule.Verbs, rule.ResourceNames))
	}
	if want := []string{"[] [nodes] [get list watch patch] []", "[ events.k8s.io] [events] [create patch update] []"}; !slices.Equal(got, want) {
		t.Errorf("ClusterRole %s rules %q, want %q", nodes, got, want)
	}
}
