package mutate

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/policy"
)

// Limits on what a response carries. The API server truncates long warnings and caps their
// total size, so a pod with hundreds of images gets a summary rather than a lost message.
const (
	maxWarnings         = 20
	maxShownRef         = 200
	maxWarningLength    = 512
	maxAnnotationLength = 2048
)

// Actions, also the values of the metric label "action".
const (
	ActionRewrite    = "rewrite"
	ActionPin        = "pin"
	ActionPullPolicy = "pullPolicy"
	ActionPullSecret = "pullSecret"
)

// Change is one modification pullgate makes, or in audit mode would make.
type Change struct {
	Action string
	Field  string
	From   string
	To     string
}

// Result is the answer to one admission.
type Result struct {
	Patch            []jsonpatch.JsonPatchOperation // empty in audit mode
	Changes          []Change
	Warnings         []string
	AuditAnnotations map[string]string
	// Unpinned counts images that could not be pinned because resolution failed.
	Unpinned int
	// Unpinnable lists the image fields left unpinned or untouched, and why: resolution
	// failures and references that cannot be read. Reports and explain show them.
	Unpinnable []Unpinnable
	// Mismatches lists the image fields whose mirror serves another digest for the tag than
	// its upstream, pinned or not. Reports show them.
	Mismatches []Mismatch
	// Deny, when set, is the reason to reject the pod (onError: Deny and a digest could not be had).
	Deny string
}

// Unpinnable is an image field pullgate could not pin, or could not read at all.
type Unpinnable struct {
	Field  string
	Image  string
	Reason string
}

// Mismatch is an image field whose mirror's digest differs from the upstream's.
type Mismatch struct {
	Field string
	Image string
	contract.DigestMismatch
}

// Apply turns the plan and the resolver's outcomes (keyed by contract.ResolveRequest.Ref.String()) into
// the patch, warnings and annotations. A missing outcome counts as a failed resolution.
func (p *Plan) Apply(outcomes map[string]contract.Outcome) Result {
	r := Result{Unpinnable: p.problems}
	warnings := append([]string(nil), p.warnings...)
	var denials []string
	for _, ip := range p.images {
		digest := ip.ref.digest
		target := ip.target
		if ip.request != nil {
			o := ip.outcome(outcomes)
			if o.Mismatch != nil {
				r.Mismatches = append(r.Mismatches, Mismatch{Field: ip.field(), Image: ip.image, DigestMismatch: *o.Mismatch})
				if o.Err == nil {
					warnings = append(warnings, fmt.Sprintf("%s: %s", ip.field(), o.Mismatch))
				}
			}
			switch {
			case o.Err != nil && p.OnError == policy.OnErrorDeny:
				r.Unpinned++
				r.Unpinnable = append(r.Unpinnable, Unpinnable{Field: ip.field(), Image: ip.image, Reason: o.Err.Error()})
				denials = append(denials, fmt.Sprintf("%s %q: %v", ip.field(), clip(ip.image), o.Err))
			case o.Err != nil:
				r.Unpinned++
				r.Unpinnable = append(r.Unpinnable, Unpinnable{Field: ip.field(), Image: ip.image, Reason: o.Err.Error()})
				warnings = append(warnings, fmt.Sprintf("%s: could not pin %q to a digest (%v); admitted with its tag", ip.field(), clip(ip.image), o.Err))
			default:
				digest = o.Digest
				// The digest was checked against the mirror that served it, and only that one.
				if f := o.Failover; f != nil && f.Served <= len(ip.alternates) {
					target = ip.alternates[f.Served-1].target
					if len(f.Skipped) > 0 {
						warnings = append(warnings, ip.failoverText(f))
					}
				}
				if o.Stale {
					warnings = append(warnings, fmt.Sprintf("%s: registry unavailable, %q pinned to the last known digest %s", ip.field(), clip(ip.image), o.Digest))
				}
			}
		}
		image := ip.ref.format(target, digest)
		if image != ip.image {
			r.Patch = append(r.Patch, jsonpatch.NewOperation("replace", ip.imagePath(), image))
			from := ip.image
			if ip.rewritten {
				moved := ip.ref.format(target, ip.ref.digest)
				r.Changes = append(r.Changes, Change{Action: ActionRewrite, Field: ip.field(), From: from, To: moved})
				from = moved
			}
			if from != image {
				r.Changes = append(r.Changes, Change{Action: ActionPin, Field: ip.field(), From: from, To: image})
			}
		}
		if digest != "" && ip.pullPolicy != "" && ip.pullPolicy != ip.site.pullPolicy {
			r.Changes = append(r.Changes, Change{Action: ActionPullPolicy, Field: ip.pullPolicyField(), From: string(ip.site.pullPolicy), To: string(ip.pullPolicy)})
			// add, not replace: the field may be absent, and add on an existing member replaces it.
			r.Patch = append(r.Patch, jsonpatch.NewOperation("add", ip.pullPolicyPath(), string(ip.pullPolicy)))
		}
	}
	r.Patch = append(r.Patch, p.secretOps(&r)...)
	if len(denials) > 0 {
		r.Deny = "pullgate: cannot pin to a digest, and the policy says onError: Deny: " + strings.Join(denials, "; ")
		r.Patch = nil
		return r
	}
	// Audit mode sends no patch, so it needs no record of the originals either.
	if len(r.Patch) > 0 && p.Mode != policy.ModeAudit {
		r.Patch = append(r.Patch, p.originalOp(r.Changes))
	}
	if p.Mode == policy.ModeAudit {
		r.Patch = nil
		for _, c := range r.Changes {
			warnings = append(warnings, c.wouldText())
		}
	}
	r.Warnings = capWarnings(warnings)
	r.AuditAnnotations = p.annotations(r.Changes)
	return r
}

// failoverText says which mirrors were passed over for the one that served the digest, and why.
func (ip *imagePlan) failoverText(f *contract.Failover) string {
	skipped := make([]string, len(f.Skipped))
	for i, err := range f.Skipped {
		// Registry error bodies often end in a newline, which would leave a space before ")".
		skipped[i] = fmt.Sprintf("mirror %s skipped (%s)", ip.mirrorOf(i), strings.TrimSpace(err.Error()))
	}
	return fmt.Sprintf("%s: %s; %q pinned against mirror %s", ip.field(), strings.Join(skipped, "; "), clip(ip.image), ip.mirrorOf(f.Served))
}

// mirrorOf is the host of the i-th mirror tried: the first, then the alternates.
func (ip *imagePlan) mirrorOf(i int) string {
	if i > 0 && i <= len(ip.alternates) {
		return ip.alternates[i-1].mirror
	}
	return ip.mirror
}

// sanitize makes a message safe as an HTTP header value: the API server passes warnings on as
// Warning headers and silently drops any with control characters, and registry error bodies
// (which end up in our messages) are untrusted text that often ends in a newline.
func sanitize(s string) string {
	if alreadySanitized(s) {
		return s
	}
	return sanitizeRunes(s)
}

// sanitizeRunes is sanitize's careful way, rune by rune.
func sanitizeRunes(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError || unicode.IsSpace(r) {
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	out := b.String()
	if len(out) > maxWarningLength {
		cut := maxWarningLength - 3
		for cut > 0 && !utf8.RuneStart(out[cut]) {
			cut--
		}
		out = out[:cut] + "..."
	}
	return out
}

// alreadySanitized reports whether sanitize would return s unchanged, for the common case of printable
// ASCII with single spaces inside: it saves building a copy of every message.
func alreadySanitized(s string) bool {
	if len(s) > maxWarningLength {
		return false
	}
	if s == "" {
		return true
	}
	if s[0] == ' ' || s[len(s)-1] == ' ' {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f:
			return false // a control character, or not ASCII: the careful way
		case c == ' ' && s[i+1] == ' ': // s does not end with a space, so i+1 is in s
			return false
		}
	}
	return true
}

func (p *Plan) secretOps(r *Result) []jsonpatch.JsonPatchOperation {
	if len(p.secrets) == 0 {
		return nil
	}
	for _, s := range p.secrets {
		r.Changes = append(r.Changes, Change{Action: ActionPullSecret, Field: "spec.imagePullSecrets", To: s})
	}
	if p.createSecrets {
		refs := make([]corev1.LocalObjectReference, len(p.secrets))
		for i, s := range p.secrets {
			refs[i] = corev1.LocalObjectReference{Name: s}
		}
		return []jsonpatch.JsonPatchOperation{jsonpatch.NewOperation("add", "/spec/imagePullSecrets", refs)}
	}
	ops := make([]jsonpatch.JsonPatchOperation, len(p.secrets))
	for i, s := range p.secrets {
		ops[i] = jsonpatch.NewOperation("add", "/spec/imagePullSecrets/-", corev1.LocalObjectReference{Name: s})
	}
	return ops
}

func (c Change) wouldText() string {
	switch c.Action {
	case ActionRewrite:
		return fmt.Sprintf("would rewrite %s %q to %q", c.Field, clip(c.From), clip(c.To))
	case ActionPin:
		return fmt.Sprintf("would pin %s %q to %q", c.Field, clip(c.From), clip(c.To))
	case ActionPullPolicy:
		return fmt.Sprintf("would set imagePullPolicy %s to %s (was %q)", c.Field, c.To, c.From)
	default:
		return fmt.Sprintf("would add imagePullSecret %q", c.To)
	}
}

// String is the change in one line: "rewrite spec.containers[0].image: a -> b".
func (c Change) String() string {
	var b strings.Builder
	c.writeTo(&b)
	return b.String()
}

// writeTo writes String's text, so a summary of several changes is built in one buffer.
func (c Change) writeTo(b *strings.Builder) {
	if c.Action == ActionPullSecret {
		b.WriteString("add imagePullSecret ")
		b.WriteString(c.To)
		return
	}
	from := c.From
	if from == "" {
		from = "(unset)"
	}
	for _, s := range []string{c.Action, " ", c.Field, ": ", clip(from), " -> ", clip(c.To)} {
		b.WriteString(s)
	}
}

// annotations summarises the changes for the API server's audit log. Keys are short because
// the API server prefixes them with the webhook's name.
func (p *Plan) annotations(changes []Change) map[string]string {
	if len(changes) == 0 {
		return nil
	}
	var b strings.Builder
	b.Grow(128 * len(changes))
	for i, c := range changes {
		if i > 0 {
			b.WriteString("; ")
		}
		c.writeTo(&b)
	}
	summary := sanitize(b.String())
	if len(summary) > maxAnnotationLength {
		summary = summary[:maxAnnotationLength-3] + "..."
	}
	// The API server refuses to overwrite an audit annotation with a different value, and a
	// reinvocation (another webhook added a container) makes different changes. Naming the key
	// after its content records both calls instead of losing the second.
	sum := sha256.Sum256([]byte(summary))
	a := map[string]string{"mode": modeText(p.Mode), "changes-" + hex.EncodeToString(sum[:4]): summary}
	if p.Rule != "" {
		a["rule"] = p.Rule
	}
	return a
}

// capWarnings sanitizes every warning and keeps at most maxWarnings of them.
func capWarnings(ws []string) []string {
	out := make([]string, 0, min(len(ws), maxWarnings))
	for i, w := range ws {
		if i == maxWarnings-1 && len(ws) > maxWarnings {
			return append(out, fmt.Sprintf("... and %d more (see the audit annotations and pullgate's log)", len(ws)-i))
		}
		out = append(out, sanitize(w))
	}
	return out
}

// clip shortens a reference for a message; a 4 KB image name must not crowd out the reason.
func clip(s string) string {
	if len(s) <= maxShownRef {
		return s
	}
	return s[:maxShownRef] + "..."
}

// modeText is a mode in lower case, as answers, annotations and metric labels spell it; the
// policy's two modes without strings.ToLower's allocation on every admission.
func modeText(m policy.Mode) string {
	switch m {
	case policy.ModeEnforce:
		return "enforce"
	case policy.ModeAudit:
		return "audit"
	}
	return strings.ToLower(string(m))
}
