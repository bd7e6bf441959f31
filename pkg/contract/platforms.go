package contract

import (
	"context"

	"github.com/google/go-containerregistry/pkg/name"
)

// PlatformLister lists the platforms a manifest runs on: for an index, those of its image
// entries (attestations and "unknown" left out); for a single image, its config's. A digest's
// platforms never change, so implementations cache them for good.
type PlatformLister interface {
	Platforms(ctx context.Context, ref name.Digest) ([]Platform, error)
	// CachedPlatforms answers without waiting when the digest was listed before.
	CachedPlatforms(ref name.Digest) ([]Platform, bool)
}
