package mutate

import (
	"fmt"
	"testing"

	"github.com/pullgate/pullgate/pkg/policy"
)

func TestDecisionsAreBounded(t *testing.T) {
	t.Parallel()
	pol := mustLoad(t, "testdata/policy.yaml")
	d := (&decisionMemo{}).For(pol)
	for i := range maxDecisions + 10 {
		d.decide(pol, fmt.Sprintf("nginx:%d", i))
		if len(d.m) > maxDecisions {
			t.Fatalf("%d decisions kept, at most %d allowed", len(d.m), maxDecisions)
		}
	}
	if got := d.decide(pol, "nginx:1"); got.target != decideImage(pol, "nginx:1").target {
		t.Errorf("decision after the memo started afresh: %+v", got)
	}
}

// A new policy never gets the old one's decisions.
func TestDecisionsFollowThePolicy(t *testing.T) {
	t.Parallel()
	load := func(mirror string) *policy.Compiled {
		pol, err := policy.Check(fmt.Appendf(nil, "apiVersion: pullgate.dev/v1alpha1\nkind: Policy\nmirrors: [{registry: docker.io, mirror: %s}]\n", mirror))
		if err != nil {
			t.Fatal(err)
		}
		return pol
	}
	a, b := load("a.example.com/hub"), load("b.example.com/hub")
	var m decisionMemo
	if got := m.For(a).decide(a, "nginx:1").target; got != "a.example.com/hub/library/nginx" {
		t.Fatalf("policy a: %s", got)
	}
	if first := m.For(a); m.For(a) != first {
		t.Error("the same policy got a new memo")
	}
	if got := m.For(b).decide(b, "nginx:1").target; got != "b.example.com/hub/library/nginx" {
		t.Errorf("after the reload: %s, want b's mirror", got)
	}
	// A stale memo handed the wrong policy decides afresh rather than answer for another.
	if got := m.For(b).decide(a, "nginx:1").target; got != "a.example.com/hub/library/nginx" {
		t.Errorf("b's memo answered for a: %s", got)
	}
	var none *decisionMemo
	if none.For(a) != nil || (*policyDecisions)(nil).decide(a, "nginx:1").target != "a.example.com/hub/library/nginx" {
		t.Error("no memo must decide every time")
	}
}
