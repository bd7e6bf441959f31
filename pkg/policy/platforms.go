package policy

import (
	"fmt"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Platforms says which platforms a pinned image must cover. Pinning a single-platform digest
// breaks the nodes of every other platform (exec format error), where the tag, resolved by each
// node, would not have.
type Platforms struct {
	// Required are os/arch pairs ("linux/arm64") every pinned image must run on.
	Required []string `json:"required,omitempty"`
	// FromNodes adds the platforms of the cluster's nodes (their kubernetes.io/os and
	// kubernetes.io/arch labels), which the webhook watches: it needs list/watch on nodes.
	FromNodes bool `json:"fromNodes,omitempty"`
	// OnMismatch is Warn (the default: pin, warn and count) or Refuse (do not pin:
	// resolve.onError applies, as when the tag cannot be resolved). Not defaulted into the
	// policy, so that a policy without platforms keeps its generation.
	OnMismatch PlatformMismatch `json:"onMismatch,omitempty"`
}

// PlatformMismatch says what happens to a pinned digest that does not cover every platform.
type PlatformMismatch string

// Platform mismatch handling.
const (
	PlatformsWarn   PlatformMismatch = "Warn"
	PlatformsRefuse PlatformMismatch = "Refuse"
)

// platformPattern is an os/arch pair as image configs and node labels spell them.
var platformPattern = regexp.MustCompile(`^[a-z0-9]+/[a-z0-9_]+$`)

func validatePlatforms(fld *field.Path, p *Platforms) field.ErrorList {
	var errs field.ErrorList
	seen := map[string]int{}
	for i, s := range p.Required {
		if !platformPattern.MatchString(s) {
			errs = append(errs, field.Invalid(fld.Child("required").Index(i), s, "must be os/arch, e.g. linux/arm64 (the variant is not compared)"))
			continue
		}
		if j, dup := seen[s]; dup {
			errs = append(errs, field.Duplicate(fld.Child("required").Index(i), fmt.Sprintf("%s (same as required[%d])", s, j)))
		}
		seen[s] = i
	}
	if p.OnMismatch != "" && p.OnMismatch != PlatformsWarn && p.OnMismatch != PlatformsRefuse {
		errs = append(errs, field.NotSupported(fld.Child("onMismatch"), p.OnMismatch, []PlatformMismatch{PlatformsWarn, PlatformsRefuse}))
	}
	if p.OnMismatch == PlatformsRefuse && len(p.Required) == 0 && !p.FromNodes {
		errs = append(errs, field.Invalid(fld.Child("onMismatch"), p.OnMismatch, "has nothing to compare: set required or fromNodes"))
	}
	return errs
}

// RequiredPlatforms are the os/arch pairs of platforms.required, split.
func (c *Compiled) RequiredPlatforms() [][2]string {
	out := make([][2]string, 0, len(c.policy.Platforms.Required))
	for _, s := range c.policy.Platforms.Required {
		os, arch, _ := strings.Cut(s, "/")
		out = append(out, [2]string{os, arch})
	}
	return out
}

// PlatformsFromNodes reports whether the nodes' platforms count (platforms.fromNodes).
func (c *Compiled) PlatformsFromNodes() bool { return c.policy.Platforms.FromNodes }

// PlatformsChecked reports whether pinned digests are checked for platforms at all.
func (c *Compiled) PlatformsChecked() bool {
	return len(c.policy.Platforms.Required) > 0 || c.policy.Platforms.FromNodes
}

// RefuseMismatchedPlatforms reports whether a digest that misses a platform is left unpinned.
func (c *Compiled) RefuseMismatchedPlatforms() bool {
	return c.policy.Platforms.OnMismatch == PlatformsRefuse
}
