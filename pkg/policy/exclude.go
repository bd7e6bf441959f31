package policy

import (
	"fmt"
	"regexp"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// kindPattern is how Kubernetes spells a kind: CamelCase, starting with a capital.
var kindPattern = regexp.MustCompile(`^[A-Z][A-Za-z0-9]*$`)

// exclusions are the compiled pod and image exclusions beyond namespaces and image globs.
type exclusions struct {
	imageRegexps []*regexp.Regexp
	owners       map[string]bool // "group/Kind" and "group/*"; the core group is ""
	podSelector  labels.Selector // nil selects nothing
}

// parseOwner splits an owner kind as written into its group and kind ("*" for every kind).
// The chart's values.schema.json spells the same forms as a pattern (test/chart checks that
// both agree).
func parseOwner(s string) (group, kind string, err error) {
	parts := strings.Split(s, "/")
	switch len(parts) {
	case 1:
		kind = parts[0]
		if kind == "*" {
			return "", "", fmt.Errorf(`"*" needs its API group ("argoproj.io/*"): a bare "*" would leave alone nearly every pod; name core kinds one by one`)
		}
	case 2:
		group, kind = parts[0], parts[1]
		if group == "" {
			return "", "", fmt.Errorf(`the core group is written without a slash ("%s", not "/%s")`, kind, kind)
		}
		if msgs := validation.IsDNS1123Subdomain(group); len(msgs) > 0 {
			return "", "", fmt.Errorf("API group %q: %s", group, strings.Join(msgs, "; "))
		}
		if kind == "" {
			return "", "", fmt.Errorf(`no kind after %q: write "%s/Kind" or "%s/*"`, group+"/", group, group)
		}
	default:
		return "", "", fmt.Errorf(`must be "Kind", "group/Kind" or "group/*", without a version (owner references match on group and kind, every version alike)`)
	}
	if kind == "*" && group != "" {
		return group, kind, nil
	}
	if !kindPattern.MatchString(kind) {
		return "", "", fmt.Errorf("kind %q must be CamelCase starting with a capital letter, as in an owner reference (Cluster, StatefulSet)", kind)
	}
	return group, kind, nil
}

// compileRegexp anchors an RE2 expression so that it matches the whole reference: an
// unanchored "nginx" would otherwise exclude every image with nginx anywhere in its name. The
// expression must compile on its own first: "a)|(b" is invalid, yet wrapped it would compile
// to an alternation whose second half is not anchored.
func compileRegexp(expr string) (*regexp.Regexp, error) {
	if _, err := regexp.Compile(expr); err != nil {
		return nil, err
	}
	return regexp.Compile(`^(?:` + expr + `)$`)
}

func compileExclusions(e Exclude) (exclusions, error) {
	out := exclusions{owners: map[string]bool{}}
	for i, expr := range e.ImageRegexps {
		re, err := compileRegexp(expr)
		if err != nil {
			return out, fmt.Errorf("exclude.imageRegexps[%d]: %w", i, err)
		}
		out.imageRegexps = append(out.imageRegexps, re)
	}
	for i, o := range e.Owners {
		group, kind, err := parseOwner(o)
		if err != nil {
			return out, fmt.Errorf("exclude.owners[%d]: %w", i, err)
		}
		out.owners[group+"/"+kind] = true
	}
	if e.PodSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(e.PodSelector)
		if err != nil {
			return out, fmt.Errorf("exclude.podSelector: %w", err)
		}
		// An empty selector selects everything: excluding every pod is what the user wrote, but
		// validation refuses it first, so here it never happens silently.
		out.podSelector = sel
	}
	return out, nil
}

func validateExclude(fld *field.Path, e Exclude) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, validateGlobs(fld.Child("namespaces"), e.Namespaces)...)
	errs = append(errs, validateGlobs(fld.Child("images"), e.Images)...)
	for i, expr := range e.ImageRegexps {
		if expr == "" {
			errs = append(errs, field.Required(fld.Child("imageRegexps").Index(i), "a regular expression may not be empty"))
		} else if _, err := compileRegexp(expr); err != nil {
			errs = append(errs, field.Invalid(fld.Child("imageRegexps").Index(i), expr, "not an RE2 regular expression: "+err.Error()))
		}
	}
	seen := map[string]int{}
	for i, o := range e.Owners {
		p := fld.Child("owners").Index(i)
		if o == "" {
			errs = append(errs, field.Required(p, `an owner kind: "Kind", "group/Kind" or "group/*"`))
			continue
		}
		group, kind, err := parseOwner(o)
		if err != nil {
			errs = append(errs, field.Invalid(p, o, err.Error()))
			continue
		}
		if j, dup := seen[group+"/"+kind]; dup {
			errs = append(errs, field.Duplicate(p, fmt.Sprintf("%s (same as owners[%d])", o, j)))
		}
		seen[group+"/"+kind] = i
	}
	if s := e.PodSelector; s != nil {
		p := fld.Child("podSelector")
		if len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0 {
			errs = append(errs, field.Invalid(p, "{}", "an empty selector selects every pod, which would turn pullgate off; remove it or give labels"))
		} else if _, err := metav1.LabelSelectorAsSelector(s); err != nil {
			errs = append(errs, field.Invalid(p, s.String(), err.Error()))
		}
	}
	return errs
}

// ExcludedOwner reports whether an owner reference (its apiVersion and kind) is of a kind in
// exclude.owners.
func (c *Compiled) ExcludedOwner(apiVersion, kind string) bool {
	if len(c.exclude.owners) == 0 {
		return false
	}
	group, _, found := strings.Cut(apiVersion, "/")
	if !found {
		group = "" // "v1": the core group
	}
	return c.exclude.owners[group+"/"+kind] || c.exclude.owners[group+"/*"]
}

// ExcludedPod reports whether a pod's labels match exclude.podSelector.
func (c *Compiled) ExcludedPod(podLabels map[string]string) bool {
	return c.exclude.podSelector != nil && c.exclude.podSelector.Matches(labels.Set(podLabels))
}

// ExcludesPods reports whether the policy excludes pods by owner or label, so that callers
// need not look at either otherwise.
func (c *Compiled) ExcludesPods() bool {
	return len(c.exclude.owners) > 0 || c.exclude.podSelector != nil
}
