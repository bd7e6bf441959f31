package mutate

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/policy"
)

// NodePlatforms gives the platforms of the cluster's nodes, from an informer's cache.
type NodePlatforms interface {
	Platforms() []contract.Platform
}

var platformMismatchTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "pullgate_platform_mismatch_total",
	Help: "Pinned digests that do not cover every required platform, by registry and what happened: warned (pinned anyway), refused (left unpinned, onError applies) or unknown (platforms could not be listed).",
}, []string{"registry", "outcome"})

// WantedPlatforms are platforms.required and, with platforms.fromNodes, the nodes' platforms
// (nodes may be nil): those every pinned digest must cover.
func WantedPlatforms(pol *policy.Compiled, nodes NodePlatforms) []contract.Platform {
	var want []contract.Platform
	for _, p := range pol.RequiredPlatforms() {
		want = append(want, contract.Platform{OS: p[0], Architecture: p[1]})
	}
	if pol.PlatformsFromNodes() && nodes != nil {
		for _, p := range nodes.Platforms() {
			if !slices.Contains(want, p) {
				want = append(want, p)
			}
		}
	}
	return want
}

// checkPlatforms compares each digest about to be pinned with the platforms it must run on. A
// single-platform digest pinned on a mixed cluster breaks the nodes of every other platform
// (exec format error) where the tag, resolved by each node, would not: it warns, or with
// platforms.onMismatch Refuse turns the outcome into a failure so that onError applies. A digest
// already listed costs a map lookup; a new one a manifest read (and a config read for a single
// image), under half the resolve budget. It may change outcomes.
func (h *Handler) checkPlatforms(ctx context.Context, pol *policy.Compiled, plan *Plan, outcomes map[string]contract.Outcome, dryRun bool) []string {
	if h.Platforms == nil || !pol.PlatformsChecked() || len(outcomes) == 0 {
		return nil
	}
	want := WantedPlatforms(pol, h.NodePlatforms)
	if len(want) == 0 {
		return nil
	}
	var listCtx context.Context // made on the first digest not yet listed
	var warnings []string
	checked := map[string]bool{}
	for _, ip := range plan.images {
		if ip.request == nil {
			continue
		}
		key := ip.request.Ref.String()
		o, ok := outcomes[key]
		if !ok || o.Err != nil || o.Digest == "" || checked[key] {
			continue
		}
		checked[key] = true
		ref := ip.request.Candidate(o.Served()).Context().Digest(o.Digest)
		host := ref.Context().RegistryStr()
		have, ok := h.Platforms.CachedPlatforms(ref)
		if !ok {
			if listCtx == nil {
				var cancel context.CancelFunc
				listCtx, cancel = context.WithTimeout(ctx, pol.ResolveTimeout()/2)
				defer cancel()
			}
			var err error
			if have, err = h.Platforms.Platforms(listCtx, ref); err != nil {
				log.FromContext(ctx).V(1).Info("Cannot list platforms", "image", ip.image, "digest", o.Digest, "error", err.Error())
				if !dryRun {
					platformMismatchTotal.WithLabelValues(host, "unknown").Inc()
				}
				warnings = append(warnings, fmt.Sprintf("%s: could not check which platforms %s covers (%v); pinned without checking", ip.field(), o.Digest, err))
				continue
			}
		}
		cause, mismatch := PlatformMismatch(o.Digest, have, want)
		if !mismatch {
			continue
		}
		outcome := "warned"
		if pol.RefuseMismatchedPlatforms() {
			outcome = "refused"
			outcomes[key] = contract.Outcome{Err: fmt.Errorf("platforms.onMismatch Refuse: %s", cause)}
		} else {
			warnings = append(warnings, fmt.Sprintf("%s: %s", ip.field(), cause))
		}
		if !dryRun {
			platformMismatchTotal.WithLabelValues(host, outcome).Inc()
		}
	}
	return warnings
}

// PlatformMismatch says, when a digest covering have lacks some of want, which and what that
// costs; mismatch is false when it covers them all.
func PlatformMismatch(digest string, have, want []contract.Platform) (cause string, mismatch bool) {
	var missing []string
	for _, w := range want {
		if !slices.Contains(have, w) {
			missing = append(missing, w.String())
		}
	}
	if len(missing) == 0 {
		return "", false
	}
	return fmt.Sprintf("digest %s covers %s, not %s: a node of those platforms would fail to run it (exec format error)", digest, platformList(have), strings.Join(missing, ", ")), true
}

func platformList(ps []contract.Platform) string {
	if len(ps) == 0 {
		return "no platform"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return "only " + strings.Join(s, ", ")
}
