package resolve

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/pullgate/pullgate/pkg/contract"
)

// maxPlatformDigests bounds the digests whose platforms are remembered; forgetting them all
// costs one manifest read each on the next admissions.
const maxPlatformDigests = 10000

var _ contract.PlatformLister = (*Platforms)(nil)

// Platforms lists the platforms of digests through a Resolver, and remembers them: a digest
// names fixed bytes. A type of its own beside the Resolver, so that this file is all that
// platform listing adds to the package.
type Platforms struct {
	r  *Resolver
	mu sync.Mutex
	m  map[string][]contract.Platform
}

// NewPlatforms returns a lister that reads manifests through r.
func NewPlatforms(r *Resolver) *Platforms {
	return &Platforms{r: r, m: map[string][]contract.Platform{}}
}

// CachedPlatforms answers from memory.
func (p *Platforms) CachedPlatforms(ref name.Digest) ([]contract.Platform, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out, ok := p.m[ref.String()]
	return out, ok
}

// Platforms reads ref's manifest (and for a single image its config) through the resolver's
// transports, credentials, sessions and breaker, as Warm does, and lists its platforms.
func (p *Platforms) Platforms(ctx context.Context, ref name.Digest) ([]contract.Platform, error) {
	if out, ok := p.CachedPlatforms(ref); ok {
		return out, nil
	}
	var out []contract.Platform
	err := p.r.read(ctx, p.r.cfg.Load(), ref, podCreds{}, false, func(ctx context.Context, rt http.RoundTripper) error {
		out = nil
		desc, err := remote.Get(ref, remote.WithContext(ctx), remote.WithTransport(rt))
		if err != nil {
			return err
		}
		if desc.MediaType.IsIndex() {
			idx, err := desc.ImageIndex()
			if err != nil {
				return err
			}
			im, err := idx.IndexManifest()
			if err != nil {
				return err
			}
			for _, m := range im.Manifests {
				if m.MediaType.IsImage() && wanted(m.Platform, nil) {
					out = append(out, contract.Platform{OS: m.Platform.OS, Architecture: m.Platform.Architecture})
				}
			}
			return nil
		}
		img, err := desc.Image()
		if err != nil {
			return err
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return err
		}
		out = append(out, contract.Platform{OS: cf.OS, Architecture: cf.Architecture})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("platforms of %s: %w", ref, err)
	}
	p.mu.Lock()
	if len(p.m) >= maxPlatformDigests {
		p.m = map[string][]contract.Platform{}
	}
	p.m[ref.String()] = out
	p.mu.Unlock()
	return out, nil
}
