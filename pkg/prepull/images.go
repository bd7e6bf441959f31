package prepull

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/policy"
)

// ErrUnpinned marks an image that could not be pinned to a digest.
var ErrUnpinned = errors.New("cannot pin")

// ImagePlan is one pre-pull image planned by the mutation core, before any digest is known.
type ImagePlan struct {
	// Source is the image as the policy writes it (as a pod author would).
	Source string
	// Request is what to resolve; nil when nothing needs resolving (already pinned, excluded,
	// or resolve.enabled: false).
	Request *contract.ResolveRequest

	plan *mutate.Plan
}

// Pinned is an image as the node pulls it.
type Pinned struct {
	Source string // as written in the policy
	Ref    string // mirror-rewritten and pinned, repo:tag@sha256:...
}

// Digest is the digest of Ref, or "" when it carries none.
func (p Pinned) Digest() string {
	if d, err := name.NewDigest(p.Ref); err == nil {
		return d.DigestStr()
	}
	return ""
}

// Plan plans every image of a group exactly as the webhook plans a pod's: each image is planned
// alone, as the one container of a pod created in an enforce namespace, so its resolution and
// its errors are its own.
func Plan(pol *policy.Compiled, g policy.Prepull) ([]ImagePlan, error) {
	out := make([]ImagePlan, 0, len(g.Images))
	for _, img := range g.Images {
		raw, err := json.Marshal(map[string]any{
			"apiVersion": "v1", "kind": "Pod",
			"metadata": map[string]any{"name": "prepull-" + g.Name},
			"spec":     map[string]any{"containers": []any{map[string]any{"name": "image", "image": img}}},
		})
		if err != nil {
			return nil, err
		}
		p, err := mutate.NewPlan(pol, mutate.Input{
			Operation:       admissionv1.Create,
			NamespaceLabels: map[string]string{policy.ModeLabel: "enforce"},
			Object:          raw,
		})
		if err != nil {
			return nil, fmt.Errorf("planning %q: %w", img, err)
		}
		if p.Skip != "" {
			return nil, fmt.Errorf("planning %q: the policy skips pods (%s)", img, p.Skip)
		}
		ip := ImagePlan{Source: img, plan: p}
		if reqs := p.Requests(); len(reqs) == 1 {
			ip.Request = &reqs[0]
		}
		out = append(out, ip)
	}
	return out, nil
}

// Pin applies the resolver's outcome for the image's Request (ignored when Request is nil) and
// returns the reference the node pulls. A tag that needed resolving and was not resolved is an
// error wrapping ErrUnpinned and naming the image: a pre-pull of an unpinned tag fills the cache
// with whatever the tag names today, not what pods will be pinned to.
func (ip ImagePlan) Pin(o contract.Outcome) (Pinned, error) {
	outcomes := map[string]contract.Outcome{}
	if ip.Request != nil {
		if o.Err == nil && o.Digest == "" {
			o.Err = errors.New("no digest")
		}
		if o.Err != nil {
			return Pinned{}, fmt.Errorf("%w %q: %w", ErrUnpinned, ip.Source, o.Err)
		}
		outcomes[ip.Request.Ref.String()] = o
	}
	res := ip.plan.Apply(outcomes)
	if res.Deny != "" || res.Unpinned > 0 {
		return Pinned{}, fmt.Errorf("%w %q: %s", ErrUnpinned, ip.Source, res.Deny)
	}
	p := Pinned{Source: ip.Source, Ref: ip.Source}
	for _, c := range res.Changes {
		if c.Action == mutate.ActionRewrite || c.Action == mutate.ActionPin {
			p.Ref = c.To
		}
	}
	if len(res.Warnings) > 0 && p.Ref == ip.Source && ip.Request == nil {
		// The planner leaves what it cannot parse untouched, with a warning.
		if _, err := name.ParseReference(ip.Source); err != nil {
			return Pinned{}, fmt.Errorf("%w %q: %s", ErrUnpinned, ip.Source, res.Warnings[0])
		}
	}
	return p, nil
}
