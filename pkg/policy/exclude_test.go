package policy_test

import (
	"testing"

	"github.com/pullgate/pullgate/pkg/policy"
)

func TestExclusions(t *testing.T) {
	t.Parallel()
	c, err := policy.Load("testdata/valid-exclude.yaml")
	if err != nil {
		t.Fatal(err)
	}
	owners := []struct {
		apiVersion, kind string
		want             bool
	}{
		{"postgresql.cnpg.io/v1", "Cluster", true},
		{"postgresql.cnpg.io/v2", "Cluster", true}, // every version alike
		{"postgresql.cnpg.io/v1", "Pooler", false},
		{"argoproj.io/v1alpha1", "Rollout", true}, // group/*
		{"v1", "Node", true},                      // the core group
		{"apps/v1", "ReplicaSet", false},
		{"cluster.x-k8s.io/v1beta1", "Cluster", false}, // same kind, other group
	}
	for _, tc := range owners {
		t.Run("owner "+tc.apiVersion+" "+tc.kind, func(t *testing.T) {
			t.Parallel()
			if got := c.ExcludedOwner(tc.apiVersion, tc.kind); got != tc.want {
				t.Errorf("ExcludedOwner(%q, %q) = %v, want %v", tc.apiVersion, tc.kind, got, tc.want)
			}
		})
	}
	images := []struct {
		ref  string
		want bool
	}{
		{"docker.io/library/postgres:16", true},
		{"docker.io/library/postgres:17.2", true},
		{"docker.io/library/postgres:15", false},
		{"docker.io/library/postgres:16-alpine", false}, // anchored: the whole reference must match
		{"evil.example.com/docker.io/library/postgres:16", false},
		{"ghcr.io/cloudnative-pg/postgresql:16", true}, // the glob still applies
	}
	for _, tc := range images {
		t.Run("image "+tc.ref, func(t *testing.T) {
			t.Parallel()
			if got := c.ExcludedImage(tc.ref); got != tc.want {
				t.Errorf("ExcludedImage(%q) = %v, want %v", tc.ref, got, tc.want)
			}
		})
	}
	pods := []struct {
		name   string
		labels map[string]string
		want   bool
	}{
		{"selected", map[string]string{"cnpg.io/cluster": "db"}, true},
		{"other labels", map[string]string{"app": "web"}, false},
		{"no labels", nil, false},
	}
	for _, tc := range pods {
		t.Run("pod "+tc.name, func(t *testing.T) {
			t.Parallel()
			if got := c.ExcludedPod(tc.labels); got != tc.want {
				t.Errorf("ExcludedPod(%v) = %v, want %v", tc.labels, got, tc.want)
			}
		})
	}
	if !c.ExcludesPods() {
		t.Error("ExcludesPods() = false with owners and a podSelector")
	}
	plain, err := policy.Check([]byte("apiVersion: pullgate.dev/v1alpha1\nkind: Policy\n"))
	if err != nil {
		t.Fatal(err)
	}
	if plain.ExcludesPods() || plain.ExcludedOwner("postgresql.cnpg.io/v1", "Cluster") || plain.ExcludedPod(map[string]string{"a": "b"}) {
		t.Error("a policy without exclusions excludes pods")
	}
}
