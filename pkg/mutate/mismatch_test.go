package mutate_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrmutate "github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/policy"
	"github.com/pullgate/pullgate/pkg/resolve"
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

// Through the handler and a real resolver: a mirror that serves a tag converted to OCI (as Zot's
// default sync does) gets its digest pinned at once, and once the background comparison with the
// upstream has run, the tag's next admissions carry the warning.
func TestHandlerWarnsOfDigestMismatch(t *testing.T) {
	t.Parallel()
	upstream, mirror := newTestRegistry(t), newTestRegistry(t)
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	write := func(host, repoTag string, mt types.MediaType) string {
		ref, err := name.NewTag(host+"/"+repoTag, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		img := ggcrmutate.MediaType(img, mt)
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
		d, err := img.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d.String()
	}
	write(upstream.host, "app:v1", types.DockerManifestSchema2)
	converted := write(mirror.host, "up/app:v1", types.OCIManifestSchema1)
	pol, err := policy.Check([]byte(fmt.Sprintf(`apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors: [{registry: %q, mirror: %s/up, insecure: true}]
registries: [{host: %q, insecure: true}]
resolve: {digestMismatch: Mirror}
`, upstream.host, mirror.host, upstream.host)))
	if err != nil {
		t.Fatal(err)
	}
	res, err := resolve.New(resolve.Options{DigestMismatch: resolve.MismatchPolicy(pol.DigestMismatch()),
		Registries: map[string]resolve.Registry{upstream.host: {Insecure: true}, mirror.host: {Insecure: true}}})
	if err != nil {
		t.Fatal(err)
	}
	h := mutate.NewHandler(mutate.Handler{Policy: fixedPolicy{pol}, Resolver: res, OwnNamespace: "pullgate"})
	req := podRequest(t, admissionv1.Create, testPod(upstream.host+"/app:v1"))
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp := h.Handle(context.Background(), req)
		if image := applied(t, req, resp).Spec.Containers[0].Image; !strings.HasSuffix(image, "@"+converted) {
			t.Fatalf("pinned %s, want the mirror's %s", image, converted)
		}
		if len(resp.Warnings) == 1 && strings.Contains(resp.Warnings[0], "serves "+converted) && strings.HasSuffix(resp.Warnings[0], "(likely cause: conversion to OCI)") {
			t.Logf("warning: %s", resp.Warnings[0])
			return
		}
		if len(resp.Warnings) > 0 || time.Now().After(end) {
			t.Fatalf("warnings %q; want the mismatch's, once the comparison has run", resp.Warnings)
		}
	}
}
