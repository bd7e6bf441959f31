package policy

import (
	"fmt"
	"strings"
)

// Namespace annotations a tenant may set, honoured only as far as tenantOverrides allows. They
// are annotations, not labels: the pullgate.dev/mode label is the platform's opt-in (the
// webhook's namespaceSelector), while these only narrow what the policy does once opted in.
const (
	// ModeAnnotation: Audit turns an enforcing namespace into an auditing one; it never turns
	// audit into enforce.
	ModeAnnotation = "pullgate.dev/mode"
	// PodOptOutAnnotation: "true" honours pullgate.dev/skip on the namespace's pods.
	PodOptOutAnnotation = "pullgate.dev/allow-pod-opt-out"
	// MirrorAnnotation: a comma-separated list of mirrors, each as the policy writes it
	// (host[:port][/path-prefix]) or by its host alone, preferred for the registries they serve.
	MirrorAnnotation = "pullgate.dev/mirror"
)

// TenantOverrides says which namespace annotations pullgate honours. Each only narrows what
// the rest of the policy does; all are off by default, and an annotation the policy does not
// allow is ignored with an admission warning, never a denial.
type TenantOverrides struct {
	// Audit honours pullgate.dev/mode: Audit, turning Enforce into Audit for the namespace.
	Audit bool `json:"audit,omitempty"`
	// PodOptOut honours pullgate.dev/allow-pod-opt-out: "true", which lets the namespace's pods
	// opt out with pullgate.dev/skip as allowPodOptOut does for every namespace.
	PodOptOut bool `json:"podOptOut,omitempty"`
	// Mirrors honours pullgate.dev/mirror, which picks among the mirrors the policy lists for a
	// registry; a mirror the policy does not list is never used.
	Mirrors bool `json:"mirrors,omitempty"`
}

// Override outcomes: metric label values, bounded.
const (
	OverrideApplied    = "applied"
	OverrideNotAllowed = "not-allowed" // tenantOverrides does not allow the annotation
	OverrideInvalid    = "invalid"     // the value is not one the annotation takes
	OverrideWidens     = "widens"      // it would do more than the policy does, not less
	OverrideNotListed  = "not-listed"  // a mirror the policy does not list
	OverrideDuplicate  = "duplicate"   // a second mirror for a registry already picked
)

// Override is one namespace annotation and what became of it.
type Override struct {
	Annotation string
	Value      string
	Outcome    string // Override*
	// Why says, for an override not applied, why it was ignored, in words for the tenant.
	Why string
}

// Applied reports whether the override took effect (or asked for what the policy already does).
func (o Override) Applied() bool { return o.Outcome == OverrideApplied }

// ListedMirror returns the mirror the policy lists for an upstream registry that mirror names,
// as the policy writes it (host[:port][/path-prefix]) or by its host alone; the first in policy
// order when several match. It is how a namespace's pick is checked: never a host the policy
// does not list for that registry.
func (c *Compiled) ListedMirror(registry, mirror string) (MirrorTarget, bool) {
	reg := CanonicalRegistry(registry)
	mirror = strings.TrimSuffix(mirror, "/")
	for _, m := range c.onMirror {
		if m.Registry == reg && names(m, mirror) {
			return m, true
		}
	}
	return MirrorTarget{}, false
}

// names reports whether s names the mirror: its host, or its host and prefix.
func names(m MirrorTarget, s string) bool {
	return s == m.Host || (m.Prefix != "" && s == m.Host+"/"+m.Prefix)
}

// PreferredMirror returns the mirror the namespace picked for an upstream registry, if any.
func (d Decision) PreferredMirror(registry string) (MirrorTarget, bool) {
	m, ok := d.PreferredMirrors[CanonicalRegistry(registry)]
	return m, ok
}

// applyOverrides narrows a namespace's decision by its annotations, as far as allow permits,
// and records what became of each.
func (c *Compiled) applyOverrides(d *Decision, annotations map[string]string, allow TenantOverrides) {
	if v, ok := annotations[ModeAnnotation]; ok {
		d.Overrides = append(d.Overrides, c.modeOverride(d, v, allow.Audit))
	}
	if v, ok := annotations[PodOptOutAnnotation]; ok {
		d.Overrides = append(d.Overrides, podOptOutOverride(d, v, allow.PodOptOut))
	}
	if v, ok := annotations[MirrorAnnotation]; ok {
		d.Overrides = append(d.Overrides, c.mirrorOverrides(d, v, allow.Mirrors)...)
	}
}

func (c *Compiled) modeOverride(d *Decision, v string, allowed bool) Override {
	o := Override{Annotation: ModeAnnotation, Value: v, Outcome: OverrideApplied}
	switch {
	case !allowed:
		o.Outcome, o.Why = OverrideNotAllowed, "the policy does not let namespaces choose audit (tenantOverrides.audit)"
	case strings.EqualFold(v, string(ModeAudit)):
		d.Mode = ModeAudit
	case !strings.EqualFold(v, string(ModeEnforce)):
		o.Outcome, o.Why = OverrideInvalid, fmt.Sprintf("must be %s (or %s, which changes nothing)", ModeAudit, ModeEnforce)
	case d.Mode != ModeEnforce:
		o.Outcome, o.Why = OverrideWidens, fmt.Sprintf("may only narrow %s to %s; the namespace's mode is %s", ModeEnforce, ModeAudit, d.Mode)
	}
	return o
}

func podOptOutOverride(d *Decision, v string, allowed bool) Override {
	o := Override{Annotation: PodOptOutAnnotation, Value: v, Outcome: OverrideApplied}
	switch {
	case !allowed:
		o.Outcome, o.Why = OverrideNotAllowed, "the policy does not let namespaces allow pod opt-out (tenantOverrides.podOptOut)"
	case v == "true":
		d.PodOptOut = true
	case v != "false":
		o.Outcome, o.Why = OverrideInvalid, `must be "true" or "false"`
	}
	return o
}

// mirrorOverrides picks, per registry, the first listed mirror the annotation names. Each entry
// not picked is an override of its own, so the warning names it.
func (c *Compiled) mirrorOverrides(d *Decision, v string, allowed bool) []Override {
	if !allowed {
		return []Override{{Annotation: MirrorAnnotation, Value: v, Outcome: OverrideNotAllowed,
			Why: "the policy does not let namespaces pick mirrors (tenantOverrides.mirrors)"}}
	}
	var out []Override
	for entry := range strings.SplitSeq(v, ",") {
		entry = strings.TrimSuffix(strings.TrimSpace(entry), "/")
		if entry == "" {
			continue
		}
		o := Override{Annotation: MirrorAnnotation, Value: entry, Outcome: OverrideNotListed,
			Why: "is not a mirror the policy lists; only those under mirrors may be picked"}
		for _, m := range c.onMirror {
			if !names(m, entry) {
				continue
			}
			if _, picked := d.PreferredMirrors[m.Registry]; picked {
				if o.Outcome != OverrideApplied {
					o.Outcome, o.Why = OverrideDuplicate, fmt.Sprintf("a mirror of %s is picked before it", m.Registry)
				}
				continue
			}
			if d.PreferredMirrors == nil {
				d.PreferredMirrors = map[string]MirrorTarget{}
			}
			d.PreferredMirrors[m.Registry] = m
			o.Outcome, o.Why = OverrideApplied, ""
		}
		out = append(out, o)
	}
	if len(out) == 0 {
		out = append(out, Override{Annotation: MirrorAnnotation, Value: v, Outcome: OverrideInvalid,
			Why: "names no mirror; give host[:port][/path-prefix] entries separated by commas"})
	}
	return out
}
