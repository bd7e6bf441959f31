package mutate_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/policy"
)

// digestOf resolves every tag to a digest named after its repository's last element.
type digestOf map[string]string

func (d digestOf) Resolve(_ context.Context, req contract.ResolveRequest) (contract.Resolution, error) {
	repo := req.Ref.Context().RepositoryStr()
	return contract.Resolution{Digest: d[repo[strings.LastIndex(repo, "/")+1:]]}, nil
}

// platformsOf lists platforms by digest; a digest it does not know fails.
type platformsOf map[string][]contract.Platform

func (p platformsOf) Platforms(_ context.Context, ref name.Digest) ([]contract.Platform, error) {
	if ps, ok := p[ref.DigestStr()]; ok {
		return ps, nil
	}
	return nil, errors.New("manifest unknown")
}

func (p platformsOf) CachedPlatforms(name.Digest) ([]contract.Platform, bool) { return nil, false }

type nodes []contract.Platform

func (n nodes) Platforms() []contract.Platform { return n }

func TestHandlerPlatforms(t *testing.T) {
	t.Parallel()
	var (
		single = "sha256:" + strings.Repeat("1", 64)
		multi  = "sha256:" + strings.Repeat("2", 64)
		amd64  = contract.Platform{OS: "linux", Architecture: "amd64"}
		arm64  = contract.Platform{OS: "linux", Architecture: "arm64"}
	)
	resolver := digestOf{"single": single, "multi": multi, "unlisted": "sha256:" + strings.Repeat("3", 64)}
	lister := platformsOf{single: {amd64}, multi: {amd64, arm64}}
	load := func(platforms string) *policy.Compiled {
		pol, err := policy.Check([]byte("apiVersion: pullgate.dev/v1alpha1\nkind: Policy\nmirrors: [{registry: docker.io, mirror: mirror.example.com/hub}]\n" + platforms))
		if err != nil {
			t.Fatal(err)
		}
		return pol
	}
	tests := []struct {
		name, platforms, image string
		nodes                  nodes
		pinned                 bool
		warning                string // substring of the one platform warning; "" for none
	}{
		{"single on amd64 only", "platforms: {required: [linux/amd64]}", "single:1", nil, true, ""},
		{"single, arm64 required", "platforms: {required: [linux/amd64, linux/arm64]}", "single:1", nil, true,
			"spec.containers[0].image: digest " + single + " covers only linux/amd64, not linux/arm64: a node of those platforms would fail to run it (exec format error)"},
		{"index covers both", "platforms: {required: [linux/amd64, linux/arm64]}", "multi:1", nil, true, ""},
		{"arm64 node", "platforms: {fromNodes: true}", "single:1", nodes{amd64, arm64}, true, "not linux/arm64"},
		{"nodes not watched", "platforms: {required: [linux/amd64]}", "single:1", nodes{arm64}, true, ""},
		{"refused", "platforms: {fromNodes: true, onMismatch: Refuse}", "single:1", nodes{arm64}, false, "could not pin"},
		{"refused, index fine", "platforms: {fromNodes: true, onMismatch: Refuse}", "multi:1", nodes{arm64}, true, ""},
		{"cannot list", "platforms: {required: [linux/arm64]}", "unlisted:1", nil, true, "could not check which platforms"},
		{"not checked", "", "single:1", nodes{arm64}, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := mutate.NewHandler(mutate.Handler{Policy: mutate.StaticPolicy{Policy: load(tc.platforms)}, Resolver: resolver, Platforms: lister, NodePlatforms: tc.nodes})
			req := rawRequest(admissionv1.Create, fmt.Appendf(nil, `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":%q}]}}`, tc.image))
			resp := h.Handle(t.Context(), req)
			if !resp.Allowed {
				t.Fatalf("denied: %v", resp.Result)
			}
			pinned := strings.Contains(string(resp.Patch), "@sha256:")
			if pinned != tc.pinned {
				t.Errorf("pinned = %v, want %v; patch %s", pinned, tc.pinned, resp.Patch)
			}
			var got []string
			for _, w := range resp.Warnings {
				if strings.Contains(w, "platform") || strings.Contains(w, "could not pin") {
					got = append(got, w)
				}
			}
			switch {
			case tc.warning == "" && len(got) > 0:
				t.Errorf("unexpected warnings %q", got)
			case tc.warning != "" && (len(got) != 1 || !strings.Contains(got[0], tc.warning)):
				t.Errorf("warnings %q, want one with %q", got, tc.warning)
			}
		})
	}
}
