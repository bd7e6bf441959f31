package report

import (
	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/mutate"
)

// podFindings turns one pod's would-be changes into findings, and counts them.
func podFindings(ps podScan, r mutate.Result, enforce bool, generation string, c *Counts) []Finding {
	var out []Finding
	cause := ""
	if enforce {
		cause = driftCause(ps.original, generation)
	}
	notLookedUp := map[string]bool{}
	for _, u := range r.Unpinnable {
		if u.Reason == ErrNotResolved.Error() {
			notLookedUp[u.Field] = true
			c.Pin++
			out = append(out, finding(RulePin, u.Field, u.Image, NotLookedUp, enforce, cause))
			continue
		}
		c.Unpinnable++
		out = append(out, Finding{Rule: RuleUnpinnable, Result: ResultWarn, Field: u.Field, From: u.Image, Reason: u.Reason})
	}
	for _, m := range r.Mismatches {
		out = append(out, Finding{Rule: RuleDigestMismatch, Result: ResultWarn, Field: m.Field, From: m.Image, Reason: mismatchText(m.DigestMismatch), Cause: m.Cause})
	}
	for _, ch := range r.Changes {
		rule := RulePin
		switch ch.Action {
		case mutate.ActionRewrite:
			rule = RuleRewrite
			c.Rewrite++
		case mutate.ActionPin:
			c.Pin++
		case mutate.ActionPullPolicy:
			rule = RulePullPolicy
			c.PullPolicy++
		case mutate.ActionPullSecret:
			rule = RulePullSecret
			c.PullSecret++
		}
		out = append(out, finding(rule, ch.Field, ch.From, ch.To, enforce, cause))
	}
	return out
}

// finding is a change as a finding: a warning of what opting in or enforcing would do, or, in an
// enforce namespace, drift.
func finding(rule, field, from, to string, enforce bool, cause string) Finding {
	if !enforce {
		return Finding{Rule: rule, Result: ResultWarn, Field: field, From: from, To: to}
	}
	f := Finding{Rule: RuleDrift, Result: ResultFail, Field: field, From: from, To: to, Cause: cause, Reason: rule}
	if rule == RuleRewrite {
		f.Rule, f.Reason = RuleNotFromMirror, ""
	}
	return f
}

func driftCause(original, generation string) string {
	if original == "" {
		return CauseNotAdmitted
	}
	o, err := mutate.ParseOriginal(original)
	if err != nil || o.Policy != generation {
		return CausePolicyChanged
	}
	return CauseAdmittedUnpinned
}

// mismatchText is a digest mismatch short enough for a report property: the image and the
// cause have properties of their own.
func mismatchText(m contract.DigestMismatch) string {
	s := "mirror " + m.Mirror + " serves " + m.MirrorDigest + ", upstream " + m.UpstreamDigest
	if m.Declared {
		s += "; the policy says the mirror preserves digests"
	}
	return s
}
