package mutate

import (
	"errors"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/pullgate/pullgate/pkg/contract"
)

var errNotResolved = errors.New("not resolved")

// outcome is the resolver's answer for the image's request; a missing one is a failed resolution.
func (ip *imagePlan) outcome(outcomes map[string]contract.Outcome) contract.Outcome {
	o, ok := outcomes[ip.request.Ref.String()]
	if !ok {
		o.Err = errNotResolved
	}
	return o
}

// Pinned is an image field that ends up pinned by digest.
type Pinned struct {
	Field string
	Ref   name.Digest
}

// Pinned lists the image fields that end up pinned by digest, as Apply leaves them, on a
// registry pullgate already talks to for this pod (a mirror, or where it resolved the tag):
// what checks on the digest itself (its platforms) read. A digest the pod author wrote for
// another registry is left out, so that no check calls an address only a pod names.
func (p *Plan) Pinned(outcomes map[string]contract.Outcome) []Pinned {
	var out []Pinned
	for _, ip := range p.images {
		digest := ip.ref.digest
		if ip.request != nil {
			if o := ip.outcome(outcomes); o.Err == nil {
				digest = o.Digest
			}
		} else if ip.mirror == "" {
			continue
		}
		if digest == "" {
			continue
		}
		ref, err := name.NewDigest(ip.ref.format(ip.target, digest))
		if err != nil {
			continue // a reference the planner formed always parses; nothing to check otherwise
		}
		// Without the tag, as the admission check names a digest: one cache entry per digest.
		out = append(out, Pinned{Field: ip.field(), Ref: ref.Context().Digest(ref.DigestStr())})
	}
	return out
}
