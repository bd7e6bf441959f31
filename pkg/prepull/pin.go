package prepull

import (
	"context"
	"errors"
	"time"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/policy"
)

// Pins is a group's images after resolution.
type Pins struct {
	// Images are what the DaemonSet pulls, in policy order: freshly pinned, or kept.
	Images []Pinned
	// Kept are images whose tag could not be resolved now and which keep their last pinned
	// reference; Errors holds why, in the same order.
	Kept   []Pinned
	Errors []error
	// Dropped are images that could not be pinned and were never pinned before: they are left
	// out of the DaemonSet rather than pre-pulled unpinned. Their errors are in Errors too.
	Dropped []string
}

// PinGroup resolves a group's images through resolver (each under timeout) and pins them.
// last holds the references the group pinned before, by source image.
func PinGroup(ctx context.Context, r contract.Resolver, pol *policy.Compiled, g policy.Prepull, last map[string]string, timeout time.Duration) (Pins, error) {
	plans, err := Plan(pol, g)
	if err != nil {
		return Pins{}, err
	}
	var out Pins
	for _, ip := range plans {
		var o contract.Outcome
		if ip.Request != nil {
			if r == nil {
				o.Err = errors.New("no resolver configured")
			} else {
				rctx, cancel := context.WithTimeout(ctx, timeout)
				o.Resolution, o.Err = r.Resolve(rctx, *ip.Request)
				cancel()
			}
		}
		p, err := ip.Pin(o)
		if err == nil {
			out.Images = append(out.Images, p)
			continue
		}
		if ctx.Err() != nil {
			return Pins{}, ctx.Err()
		}
		out.Errors = append(out.Errors, err)
		if ref, ok := last[ip.Source]; ok && ref != "" {
			kept := Pinned{Source: ip.Source, Ref: ref}
			out.Images = append(out.Images, kept)
			out.Kept = append(out.Kept, kept)
			continue
		}
		out.Dropped = append(out.Dropped, ip.Source)
	}
	return out, nil
}
