package report

import (
	"context"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/policy"
)

// Rules for what admission warns of beyond the changes it makes: a pull secret the policy
// injects that does not exist in the namespace, and a pinned digest that does not cover the
// platforms the policy requires. Each is a warning of what opting in would bring, and a failure
// in an enforce namespace, whose pods already depend on it.
const (
	RuleMissingPullSecret = "missing-pull-secret"
	RulePlatformMismatch  = "platform-mismatch"
)

// Checks are what a scan learned of the cluster beyond digests (Scan.Inspect). The zero value
// checks nothing.
type Checks struct {
	// Missing are, by namespace, the injected pull secrets that do not exist there.
	Missing map[string][]string
	// Mismatch is, by digest reference, why the digest does not cover the wanted platforms.
	Mismatch map[string]string
}

// Inspector asks the cluster and the registries what Checks need. A nil Secrets or Platforms
// checks nothing of its kind.
type Inspector struct {
	Secrets   mutate.SecretChecker
	Platforms contract.PlatformLister
	// Nodes gives the nodes' platforms, for platforms.fromNodes.
	Nodes mutate.NodePlatforms
	// Timeout bounds the listing of one digest's platforms.
	Timeout time.Duration
}

// inspectWorkers bounds the digests listed at once: a first scan may list hundreds.
const inspectWorkers = 4

// Inspect runs, on the scan's pods, the checks admission runs: whether the pull secrets the
// policy injects exist in each namespace (mutate.MissingSecrets), and whether each digest the
// pods end up pinned to covers the wanted platforms (mutate.PlatformMismatch). A secret or digest
// that cannot be told about is left out: no result rather than a wrong one.
func (s *Scan) Inspect(ctx context.Context, outcomes map[string]contract.Outcome, in Inspector) Checks {
	c := Checks{Missing: map[string][]string{}, Mismatch: map[string]string{}}
	var digests []mutate.Pinned
	seen := map[string]bool{}
	for _, ns := range s.nss {
		var names []string
		for _, ps := range ns.pods {
			if ps.plan == nil {
				continue
			}
			for _, n := range ps.plan.InjectedSecrets() {
				if !slices.Contains(names, n) {
					names = append(names, n)
				}
			}
			for _, p := range ps.plan.Pinned(outcomes) {
				if !seen[p.Ref.String()] {
					seen[p.Ref.String()] = true
					digests = append(digests, p)
				}
			}
		}
		if in.Secrets != nil && len(names) > 0 {
			if missing := mutate.MissingSecrets(ctx, in.Secrets, ns.Name, names); len(missing) > 0 {
				c.Missing[ns.Name] = missing
			}
		}
	}
	want := wanted(s.pol, in)
	if len(want) == 0 {
		return c
	}
	var mu sync.Mutex
	var g errgroup.Group
	g.SetLimit(inspectWorkers)
	for _, p := range digests {
		g.Go(func() error {
			have, ok := in.Platforms.CachedPlatforms(p.Ref)
			if !ok {
				lctx, cancel := context.WithTimeout(ctx, in.Timeout)
				defer cancel()
				var err error
				if have, err = in.Platforms.Platforms(lctx, p.Ref); err != nil {
					return nil // unknown: no result
				}
			}
			if cause, mismatch := mutate.PlatformMismatch(p.Ref.DigestStr(), have, want); mismatch {
				mu.Lock()
				c.Mismatch[p.Ref.String()] = cause
				mu.Unlock()
			}
			return nil
		})
	}
	_ = g.Wait() // every worker returns nil: a digest not listed is only not reported
	return c
}

func wanted(pol *policy.Compiled, in Inspector) []contract.Platform {
	if in.Platforms == nil || !pol.PlatformsChecked() {
		return nil
	}
	return mutate.WantedPlatforms(pol, in.Nodes)
}

// checkFindings are the pod's results of the checks, counted.
func checkFindings(ns string, ps podScan, outcomes map[string]contract.Outcome, checks Checks, enforce bool, c *Counts) []Finding {
	result := ResultWarn
	if enforce {
		result = ResultFail
	}
	var out []Finding
	if missing := checks.Missing[ns]; len(missing) > 0 {
		for _, name := range ps.plan.InjectedSecrets() {
			if slices.Contains(missing, name) {
				c.MissingPullSecret++
				out = append(out, Finding{Rule: RuleMissingPullSecret, Result: result, Field: "spec.imagePullSecrets", From: name,
					Reason: mutate.MissingSecretMessage(name, ns, ps.plan.MirrorHosts())})
			}
		}
	}
	if len(checks.Mismatch) > 0 {
		for _, p := range ps.plan.Pinned(outcomes) {
			if cause, ok := checks.Mismatch[p.Ref.String()]; ok {
				c.PlatformMismatch++
				out = append(out, Finding{Rule: RulePlatformMismatch, Result: result, Field: p.Field, From: p.Ref.String(), Reason: cause})
			}
		}
	}
	return out
}
