package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// dockerHub is the canonical name pullgate uses for Docker Hub and its aliases.
const dockerHub = "docker.io"

// CanonicalRegistry folds Docker Hub's aliases into docker.io; other hosts are returned as given.
func CanonicalRegistry(host string) string {
	switch host {
	case name.DefaultRegistry, "docker.io", "registry-1.docker.io":
		return dockerHub
	}
	return host
}

// MirrorTarget is a compiled mirror: the host pods pull from and the path prefix under it.
type MirrorTarget struct {
	Registry string // canonical upstream registry this mirror serves
	Host     string // host[:port] of the mirror
	Prefix   string // path prefix without slashes at either end; may be empty
	Insecure bool
	// Source is the policy entry, for the resolver's TLS and credential settings.
	Source Mirror
}

// Repository is where an upstream repository lives on this mirror.
func (m MirrorTarget) Repository(repo string) string {
	if m.Prefix == "" {
		return m.Host + "/" + repo
	}
	return m.Host + "/" + m.Prefix + "/" + repo
}

func parseMirror(s string, insecure bool) (MirrorTarget, error) {
	if strings.Contains(s, "://") {
		return MirrorTarget{}, fmt.Errorf("must be host[:port][/path-prefix], without a scheme (use insecure: true for plain HTTP)")
	}
	s = strings.TrimSuffix(s, "/")
	host, prefix, _ := strings.Cut(s, "/")
	opts := []name.Option{name.StrictValidation}
	if insecure {
		opts = append(opts, name.Insecure)
	}
	// A repository under the prefix must parse, which validates host and prefix characters.
	probe := host + "/" + prefix
	if prefix == "" {
		probe = host + "/x"
	} else {
		probe += "/x"
	}
	if _, err := name.NewRepository(probe, opts...); err != nil {
		return MirrorTarget{}, fmt.Errorf("not a valid host[:port][/path-prefix]: %w", err)
	}
	if strings.ContainsAny(prefix, ":@") {
		return MirrorTarget{}, fmt.Errorf("the path prefix may not carry a tag or digest")
	}
	return MirrorTarget{Host: host, Prefix: prefix, Insecure: insecure}, nil
}

// Compiled is an immutable, validated policy with its matchers built. It is safe for
// concurrent use; reloading builds a new one.
type Compiled struct {
	policy        Policy
	mirrors       map[string][]MirrorTarget // by canonical upstream registry, in policy order
	onMirror      []MirrorTarget
	excludeNS     []*regexp.Regexp
	excludeImages []*regexp.Regexp
	exclude       exclusions
	rules         []rule
	generation    string
}

type rule struct {
	Rule
	namespaces []*regexp.Regexp
	selector   labels.Selector
}

// Compile builds the matchers of a defaulted, validated policy.
func (p *Policy) Compile() (*Compiled, error) {
	c := &Compiled{policy: *p, mirrors: map[string][]MirrorTarget{}}
	for i, m := range p.Mirrors {
		reg, err := parseRegistry(m.Registry)
		if err != nil {
			return nil, fmt.Errorf("mirrors[%d].registry: %w", i, err)
		}
		mt, err := parseMirror(m.Mirror, m.Insecure)
		if err != nil {
			return nil, fmt.Errorf("mirrors[%d].mirror: %w", i, err)
		}
		mt.Registry, mt.Source = reg, m
		c.mirrors[reg] = append(c.mirrors[reg], mt)
		c.onMirror = append(c.onMirror, mt)
	}
	var err error
	if c.excludeNS, err = compileGlobs(p.Exclude.Namespaces); err != nil {
		return nil, fmt.Errorf("exclude.namespaces: %w", err)
	}
	if c.excludeImages, err = compileGlobs(p.Exclude.Images); err != nil {
		return nil, fmt.Errorf("exclude.images: %w", err)
	}
	if c.exclude, err = compileExclusions(p.Exclude); err != nil {
		return nil, err
	}
	for i, r := range p.Rules {
		cr := rule{Rule: r}
		if cr.namespaces, err = compileGlobs(r.Namespaces); err != nil {
			return nil, fmt.Errorf("rules[%d].namespaces: %w", i, err)
		}
		if r.NamespaceSelector != nil {
			if cr.selector, err = metav1.LabelSelectorAsSelector(r.NamespaceSelector); err != nil {
				return nil, fmt.Errorf("rules[%d].namespaceSelector: %w", i, err)
			}
		}
		c.rules = append(c.rules, cr)
	}
	// A digest of the defaulted policy, not a counter: two replicas that load the same file agree
	// on it without talking, and it survives restarts.
	data, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("policy generation: %w", err)
	}
	sum := sha256.Sum256(data)
	c.generation = hex.EncodeToString(sum[:6])
	return c, nil
}

// Generation identifies the policy's content (12 hex digits): equal policies have equal
// generations. Mutated pods record it, so reports tell a pod pinned under an older policy from
// one admitted without pullgate.
func (c *Compiled) Generation() string { return c.generation }

// Policy returns a copy of the defaulted policy the matcher was built from.
func (c *Compiled) Policy() Policy { return c.policy }

// Mirrors lists the compiled mirrors in policy order.
func (c *Compiled) Mirrors() []MirrorTarget { return append([]MirrorTarget(nil), c.onMirror...) }

// MirrorFor returns the first mirror of an upstream registry host, if one is configured: where
// its images go unless that mirror fails.
func (c *Compiled) MirrorFor(registry string) (MirrorTarget, bool) {
	ms := c.mirrors[CanonicalRegistry(registry)]
	if len(ms) == 0 {
		return MirrorTarget{}, false
	}
	return ms[0], true
}

// AlternateMirrors returns the further mirrors of an upstream registry host, in the order they
// are tried when those before fail (failover); nil when it has one mirror or none.
func (c *Compiled) AlternateMirrors(registry string) []MirrorTarget {
	ms := c.mirrors[CanonicalRegistry(registry)]
	if len(ms) < 2 {
		return nil
	}
	return slices.Clone(ms[1:])
}

// OnMirror reports whether a repository (host/path, as name.Repository.Name gives it) already
// lives on a configured mirror, so it is never rewritten twice.
func (c *Compiled) OnMirror(registry, repository string) (MirrorTarget, bool) {
	for _, m := range c.onMirror {
		if registry != m.Host {
			continue
		}
		if m.Prefix == "" || repository == m.Prefix || strings.HasPrefix(repository, m.Prefix+"/") {
			return m, true
		}
	}
	return MirrorTarget{}, false
}

// ExcludedImage reports whether a normalized reference matches exclude.images or
// exclude.imageRegexps.
func (c *Compiled) ExcludedImage(ref string) bool {
	return matchAny(c.excludeImages, ref) || matchAny(c.exclude.imageRegexps, ref)
}

// ResolveEnabled reports whether tags are resolved to digests (resolve.enabled, defaulted).
func (c *Compiled) ResolveEnabled() bool { return *c.policy.Resolve.Enabled }

// ResolveTimeout is the budget for one admission's resolutions (resolve.timeout, defaulted).
func (c *Compiled) ResolveTimeout() time.Duration { return c.policy.Resolve.Timeout.Duration }

// DigestMismatch is resolve.digestMismatch in force: as set, Mirror when unset with
// fallbackToUpstream, or "" (no comparison with upstreams).
func (c *Compiled) DigestMismatch() DigestMismatch {
	if m := c.policy.Resolve.DigestMismatch; m != "" || !c.policy.Resolve.FallbackToUpstream {
		return m
	}
	return PinMirrorDigest
}

// OnError says what happens to a pod whose image cannot be pinned (resolve.onError, defaulted).
func (c *Compiled) OnError() OnError { return c.policy.Resolve.OnError }

// AllowPodOptOut reports whether the pullgate.dev/skip annotation is honoured.
func (c *Compiled) AllowPodOptOut() bool { return c.policy.AllowPodOptOut }

// Decision is what the policy says for one namespace.
type Decision struct {
	Excluded    bool
	Mode        Mode
	PullPolicy  corev1.PullPolicy
	PullSecrets []string
	Rule        string // the rule that matched, empty for the top-level settings
	// PodOptOut says pods may opt out with pullgate.dev/skip: allowPodOptOut, or the namespace's
	// pullgate.dev/allow-pod-opt-out where tenantOverrides.podOptOut allows it.
	PodOptOut bool
	// PreferredMirrors are the namespace's picks (pullgate.dev/mirror) by canonical upstream
	// registry, each one the policy lists for it: the planner tries a registry's pick first
	// among its mirrors.
	PreferredMirrors map[string]MirrorTarget
	// Overrides are the namespace's override annotations and what became of each.
	Overrides []Override
}

// Decide returns the settings for a namespace. The mode comes from, in order: the matching
// rule's mode (the platform team's explicit word for those namespaces), the namespace's
// pullgate.dev/mode label (the opt-in), and the policy's mode. The namespace's annotations then
// narrow that as far as tenantOverrides (the rule's, else the policy's) allows (see tenant.go).
func (c *Compiled) Decide(namespace string, nsLabels, nsAnnotations map[string]string) Decision {
	if matchAny(c.excludeNS, namespace) {
		return Decision{Excluded: true}
	}
	d := Decision{Mode: c.policy.Mode, PullPolicy: c.policy.PullPolicy, PullSecrets: c.policy.ImagePullSecrets, PodOptOut: c.policy.AllowPodOptOut}
	allow := c.policy.TenantOverrides
	switch strings.ToLower(nsLabels[ModeLabel]) {
	case "audit":
		d.Mode = ModeAudit
	case "enforce":
		d.Mode = ModeEnforce
	}
	for _, r := range c.rules {
		if !r.matches(namespace, nsLabels) {
			continue
		}
		d.Rule = r.Name
		if r.Mode != "" {
			d.Mode = r.Mode
		}
		if r.PullPolicy != "" {
			d.PullPolicy = r.PullPolicy
		}
		if len(r.ImagePullSecrets) > 0 {
			d.PullSecrets = r.ImagePullSecrets
		}
		if r.TenantOverrides != nil {
			allow = *r.TenantOverrides
		}
		break
	}
	c.applyOverrides(&d, nsAnnotations, allow)
	return d
}

func (r *rule) matches(namespace string, nsLabels map[string]string) bool {
	if r.selector != nil {
		return r.selector.Matches(labels.Set(nsLabels))
	}
	return matchAny(r.namespaces, namespace)
}

// compileGlob turns a glob into an anchored regexp: * is any run of characters (slashes
// included, so registry.k8s.io/* covers every repository), ? is one character.
func compileGlob(g string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("^")
	for _, r := range g {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

func compileGlobs(globs []string) ([]*regexp.Regexp, error) {
	out := make([]*regexp.Regexp, 0, len(globs))
	for _, g := range globs {
		re, err := compileGlob(g)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", g, err)
		}
		out = append(out, re)
	}
	return out, nil
}

func matchAny(res []*regexp.Regexp, s string) bool {
	for _, re := range res {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

// UsePodPullSecrets reports whether resolution may use the pod's own pull secrets.
func (c *Compiled) UsePodPullSecrets() bool { return c.policy.Resolve.UsePodPullSecrets }

// UpstreamRepository maps a repository on this mirror back to where it came from:
// harbor.example.com/dockerhub/library/nginx -> index.docker.io/library/nginx.
func (m MirrorTarget) UpstreamRepository(repo string) string {
	host := m.Registry
	if host == dockerHub {
		host = name.DefaultRegistry
	}
	if m.Prefix != "" {
		repo = strings.TrimPrefix(repo, m.Prefix+"/")
	}
	return host + "/" + repo
}
