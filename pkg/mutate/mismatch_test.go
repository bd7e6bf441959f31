package mutate_test

import (
	"errors"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/policy"
)

// A resolution that carries a digest mismatch pins what it names and warns with the resolver's
// sentence; one that carries an error as well (digestMismatch: Upstream, the mirror lacks the
// upstream's digest) is left unpinned per onError. Both are listed for reports.
func TestApplyDigestMismatch(t *testing.T) {
	t.Parallel()
	pol, err := policy.Check([]byte("apiVersion: pullgate.dev/v1alpha1\nkind: Policy\nmirrors:\n  - {registry: docker.io, mirror: m.example/hub}\n"))
	if err != nil {
		t.Fatal(err)
	}
	const mirrorDigest = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	const upstreamDigest = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	m := &contract.DigestMismatch{Mirror: "m.example", Upstream: "index.docker.io/library/x:1", MirrorDigest: mirrorDigest, UpstreamDigest: upstreamDigest, Cause: contract.CauseConversion}
	tests := []struct {
		name    string
		outcome contract.Outcome
		pinned  string // the digest pinned, "" for none
		warning string
	}{
		{"mirror's pinned", contract.Outcome{Resolution: contract.Resolution{Digest: mirrorDigest, Mismatch: m}}, mirrorDigest,
			"spec.containers[0].image: mirror m.example serves " + mirrorDigest + " for index.docker.io/library/x:1 but upstream has " + upstreamDigest + " (likely cause: conversion to OCI)"},
		{"refused", contract.Outcome{Resolution: contract.Resolution{Mismatch: m}, Err: errors.New("the mirror does not serve the upstream's digest")}, "",
			"spec.containers[0].image: could not pin \"x:1\" to a digest (the mirror does not serve the upstream's digest); admitted with its tag"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := mutate.NewPlan(pol, mutate.Input{Operation: admissionv1.Create, Namespace: "apps",
				Object: []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"x:1"}]}}`)})
			if err != nil {
				t.Fatal(err)
			}
			outcomes := map[string]contract.Outcome{}
			for _, r := range p.Requests() {
				outcomes[r.Ref.String()] = tc.outcome
			}
			res := p.Apply(outcomes)
			if len(res.Warnings) != 1 || res.Warnings[0] != tc.warning {
				t.Errorf("warnings %q, want [%q]", res.Warnings, tc.warning)
			}
			if len(res.Mismatches) != 1 || res.Mismatches[0].Field != "spec.containers[0].image" || res.Mismatches[0].Cause != contract.CauseConversion {
				t.Errorf("mismatches %+v, want the one for spec.containers[0].image", res.Mismatches)
			}
			pinned := ""
			for _, op := range res.Patch {
				if s, ok := op.Value.(string); ok && op.Path == "/spec/containers/0/image" {
					_, pinned, _ = strings.Cut(s, "@")
				}
			}
			if pinned != tc.pinned {
				t.Errorf("pinned %q, want %q", pinned, tc.pinned)
			}
		})
	}
}
