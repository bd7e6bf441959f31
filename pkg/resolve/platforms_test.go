package resolve_test

import (
	"context"
	"slices"
	"testing"

	ggcrmutate "github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/resolve"
)

// Platforms lists an index's image entries and a single image's config platform, from a real
// registry, once per digest.
func TestPlatforms(t *testing.T) {
	t.Parallel()
	tr := newRegistry(t)
	idx, images := platformIndex(t, "linux/amd64", "linux/arm64")
	multi := tr.pushIndex(t, "multi:v1", idx)
	cf, err := images["linux/amd64"].ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	img, err := ggcrmutate.ConfigFile(images["linux/amd64"], cf)
	if err != nil {
		t.Fatal(err)
	}
	single := tr.pushImage(t, "single:v1", img)
	p := resolve.NewPlatforms(newResolver(t, newClock(), resolve.Options{}, tr))

	amd64, arm64 := contract.Platform{OS: "linux", Architecture: "amd64"}, contract.Platform{OS: "linux", Architecture: "arm64"}
	for _, tc := range []struct {
		repo, digest string
		want         []contract.Platform
	}{{"multi", multi, []contract.Platform{amd64, arm64}}, {"single", single, []contract.Platform{amd64}}} {
		ref := warmRef(t, tr, tc.repo, tc.digest)
		if _, ok := p.CachedPlatforms(ref); ok {
			t.Errorf("%s: cached before it was listed", tc.repo)
		}
		got, err := p.Platforms(context.Background(), ref)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: platforms %v, want %v", tc.repo, got, tc.want)
		}
		tr.requestCounts()
		if again, ok := p.CachedPlatforms(ref); !ok || !slices.Equal(again, tc.want) {
			t.Errorf("%s: cached %v %v", tc.repo, again, ok)
		}
		if _, err := p.Platforms(context.Background(), ref); err != nil || len(tr.requestCounts()) != 0 {
			t.Errorf("%s: a second listing asked the registry (%v)", tc.repo, err)
		}
	}
	if _, err := p.Platforms(context.Background(), warmRef(t, tr, "multi", "sha256:0000000000000000000000000000000000000000000000000000000000000000")); err == nil {
		t.Error("an unknown digest listed without error")
	}
}
