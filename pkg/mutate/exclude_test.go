package mutate_test

import (
	"testing"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/policy"
)

const excludePolicy = `apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors:
  - registry: docker.io
    mirror: mirror.example.com/hub
resolve:
  enabled: false
exclude:
  imageRegexps: ['docker\.io/library/postgres:1[67]']
  owners: [postgresql.cnpg.io/Cluster, argoproj.io/*]
  podSelector:
    matchLabels: {pullgate.example/skip: "yes"}
`

// Pods owned by an excluded kind or selected by exclude.podSelector are admitted untouched,
// with a reason; images matching exclude.imageRegexps are left as written in a pod that is
// otherwise changed.
func TestExclusionsInPlan(t *testing.T) {
	t.Parallel()
	pol, err := policy.Check([]byte(excludePolicy))
	if err != nil {
		t.Fatal(err)
	}
	const nginx = `{"name":"a","image":"nginx:1.27"}`
	tests := []struct {
		name      string
		op        admissionv1.Operation
		metadata  string
		container string
		skip      string
		patched   int // image replace ops expected
	}{
		{"cnpg cluster owner", admissionv1.Create, `{"name":"db-1","ownerReferences":[{"apiVersion":"postgresql.cnpg.io/v1","kind":"Cluster","name":"db","uid":"u","controller":true}]}`, nginx, mutate.SkipOwnerExcluded, 0},
		{"cnpg owner on update", admissionv1.Update, `{"name":"db-1","ownerReferences":[{"apiVersion":"postgresql.cnpg.io/v1","kind":"Cluster","name":"db","uid":"u"}]}`, nginx, mutate.SkipOwnerExcluded, 0},
		{"group wildcard", admissionv1.Create, `{"name":"r","ownerReferences":[{"apiVersion":"argoproj.io/v1alpha1","kind":"Rollout","name":"r","uid":"u"}]}`, nginx, mutate.SkipOwnerExcluded, 0},
		{"same kind other group", admissionv1.Create, `{"name":"c","ownerReferences":[{"apiVersion":"cluster.x-k8s.io/v1beta1","kind":"Cluster","name":"c","uid":"u"}]}`, nginx, "", 1},
		{"replicaset owner", admissionv1.Create, `{"name":"w","ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"w","uid":"u"}]}`, nginx, "", 1},
		{"selected label", admissionv1.Create, `{"name":"l","labels":{"pullgate.example/skip":"yes"}}`, nginx, mutate.SkipPodExcluded, 0},
		{"other label value", admissionv1.Create, `{"name":"l","labels":{"pullgate.example/skip":"no"}}`, nginx, "", 1},
		{"regexp image", admissionv1.Create, `{"name":"pg"}`, `{"name":"a","image":"postgres:16"}`, "", 0},
		{"regexp is anchored", admissionv1.Create, `{"name":"pg"}`, `{"name":"a","image":"postgres:16-alpine"}`, "", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			obj := []byte(`{"apiVersion":"v1","kind":"Pod","metadata":` + tc.metadata + `,"spec":{"containers":[` + tc.container + `]}}`)
			in := mutate.Input{Operation: tc.op, Namespace: "apps", Object: obj}
			if tc.op == admissionv1.Update {
				in.OldObject = []byte(`{"apiVersion":"v1","kind":"Pod","metadata":` + tc.metadata + `,"spec":{"containers":[{"name":"a","image":"nginx:1.26"}]}}`)
			}
			p, err := mutate.NewPlan(pol, in)
			if err != nil {
				t.Fatal(err)
			}
			if p.Skip != tc.skip {
				t.Fatalf("skip = %q, want %q", p.Skip, tc.skip)
			}
			if p.Skip != "" {
				return
			}
			res := p.Apply(nil)
			replaced := 0
			for _, op := range res.Patch {
				if op.Operation == "replace" {
					replaced++
				}
			}
			if replaced != tc.patched {
				t.Errorf("%d image replacements, want %d: %v", replaced, tc.patched, res.Patch)
			}
		})
	}
}
