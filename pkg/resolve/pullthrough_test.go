package resolve_test

import (
	"context"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/resolve"
)

// Through a real Distribution pull-through cache, the resolved digest is the upstream's: for
// a single image and for a multi-arch index (the index digest).
func TestResolveThroughDistributionMirror(t *testing.T) {
	t.Parallel()
	upstream := newRegistry(t)
	mirrorHost := startPullThrough(t, upstream.host)
	mirror := &testRegistry{host: mirrorHost}

	tests := []struct {
		name string
		push func(t *testing.T) string // returns the upstream digest of library/<name>:v1
	}{
		{"single", func(t *testing.T) string { return upstream.push(t, "library/single:v1") }},
		{"multiarch", func(t *testing.T) string {
			return upstream.pushIndex(t, "library/multiarch:v1", randomIndex(t, types.OCIImageIndex))
		}},
	}
	r := newResolver(t, newClock(), resolve.Options{Registries: map[string]resolve.Registry{
		mirrorHost:    {Insecure: true},
		upstream.host: {Insecure: true},
	}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want := tt.push(t)
			req := contract.ResolveRequest{
				Ref:      mirror.ref(t, "library/"+tt.name+":v1"),
				Upstream: upstream.ref(t, "library/"+tt.name+":v1"),
			}
			got, err := r.Resolve(context.Background(), req)
			if err != nil {
				t.Fatalf("Resolve through the mirror: %v", err)
			}
			if got.Digest != want || got.Stale {
				t.Errorf("mirror resolved %s to %+v, upstream has %s", req.Ref, got, want)
			}
			if n := upstream.count("HEAD", "library/"+tt.name, "v1") + upstream.count("GET", "library/"+tt.name, "v1"); n == 0 {
				t.Errorf("the mirror answered without asking the upstream")
			}
		})
	}
}
