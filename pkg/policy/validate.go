package policy

import (
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// maxTimeout keeps the resolve budget below the API server's hard webhook timeout (30s), with
// room for the rest of the admission.
const maxTimeout = 25 * time.Second

// Validate returns every problem in a defaulted policy, each with its field path.
func (p *Policy) Validate() field.ErrorList {
	var errs field.ErrorList
	if p.APIVersion != APIVersion {
		errs = append(errs, field.NotSupported(field.NewPath("apiVersion"), p.APIVersion, []string{APIVersion}))
	}
	if p.Kind != Kind {
		errs = append(errs, field.NotSupported(field.NewPath("kind"), p.Kind, []string{Kind}))
	}
	errs = append(errs, validateMode(field.NewPath("mode"), p.Mode, false)...)
	errs = append(errs, validateMirrors(field.NewPath("mirrors"), p.Mirrors)...)
	errs = append(errs, validateRegistries(field.NewPath("registries"), p.Registries, p.Mirrors)...)
	errs = append(errs, validateResolve(field.NewPath("resolve"), &p.Resolve)...)
	errs = append(errs, validatePullPolicy(field.NewPath("pullPolicy"), p.PullPolicy)...)
	errs = append(errs, validateSecrets(field.NewPath("imagePullSecrets"), p.ImagePullSecrets)...)
	errs = append(errs, validateExclude(field.NewPath("exclude"), p.Exclude)...)
	errs = append(errs, validateRules(field.NewPath("rules"), p.Rules)...)
	errs = append(errs, validatePrepull(field.NewPath("prepull"), p.Prepull)...)
	errs = append(errs, validateWarm(field.NewPath("warm"), &p.Warm)...)
	errs = append(errs, validatePlatforms(field.NewPath("platforms"), &p.Platforms)...)
	errs = append(errs, validateSyncCredentials(field.NewPath("syncCredentials"), p)...)
	return errs
}

func validateMode(fld *field.Path, m Mode, optional bool) field.ErrorList {
	if (optional && m == "") || m == ModeEnforce || m == ModeAudit {
		return nil
	}
	return field.ErrorList{field.NotSupported(fld, m, []Mode{ModeEnforce, ModeAudit})}
}

func validatePullPolicy(fld *field.Path, pp corev1.PullPolicy) field.ErrorList {
	switch pp {
	case "", corev1.PullIfNotPresent, corev1.PullNever, corev1.PullAlways:
		return nil
	}
	return field.ErrorList{field.NotSupported(fld, pp, []corev1.PullPolicy{corev1.PullIfNotPresent, corev1.PullNever, corev1.PullAlways})}
}

func validateSecrets(fld *field.Path, names []string) field.ErrorList {
	var errs field.ErrorList
	seen := sets.New[string]()
	for i, n := range names {
		if msgs := validation.IsDNS1123Subdomain(n); len(msgs) > 0 {
			errs = append(errs, field.Invalid(fld.Index(i), n, strings.Join(msgs, "; ")))
		}
		if seen.Has(n) {
			errs = append(errs, field.Duplicate(fld.Index(i), n))
		}
		seen.Insert(n)
	}
	return errs
}

func validateGlobs(fld *field.Path, globs []string) field.ErrorList {
	var errs field.ErrorList
	for i, g := range globs {
		if g == "" {
			errs = append(errs, field.Required(fld.Index(i), "a glob may not be empty"))
		} else if _, err := compileGlob(g); err != nil {
			errs = append(errs, field.Invalid(fld.Index(i), g, err.Error()))
		}
	}
	return errs
}

func validateMirrors(fld *field.Path, mirrors []Mirror) field.ErrorList {
	var errs field.ErrorList
	upstreams := map[string]int{} // canonical registry -> its first entry
	regs := make([]string, len(mirrors))
	targets := make([]*MirrorTarget, len(mirrors))
	for i, m := range mirrors {
		p := fld.Index(i)
		if m.Registry == "" {
			errs = append(errs, field.Required(p.Child("registry"), "the upstream registry host, e.g. docker.io"))
		} else if reg, err := parseRegistry(m.Registry); err != nil {
			errs = append(errs, field.Invalid(p.Child("registry"), m.Registry, err.Error()))
		} else {
			regs[i] = reg
			if _, seen := upstreams[reg]; !seen {
				upstreams[reg] = i
			}
		}
		if m.Mirror == "" {
			errs = append(errs, field.Required(p.Child("mirror"), "host[:port][/path-prefix] of the mirror"))
		} else if mt, err := parseMirror(m.Mirror, m.Insecure); err != nil {
			errs = append(errs, field.Invalid(p.Child("mirror"), m.Mirror, err.Error()))
		} else {
			targets[i] = &mt
		}
		errs = append(errs, validateConnection(p, m.Connection)...)
		errs = append(errs, validateWarm(p.Child("warm"), m.Warm)...)
	}
	errs = append(errs, validateSharedHosts(fld, mirrors)...)
	errs = append(errs, validateMirrorOrder(fld, mirrors, regs, targets, upstreams)...)
	return errs
}

// validateMirrorOrder rejects mirror lists that contradict themselves: a mirror that is itself a
// mirrored upstream (an image would be rewritten twice), an entry listed twice, and one mirror
// location serving two registries (an image on it would have two upstreams). regs and targets
// are the parsed entries, "" and nil where they do not parse.
func validateMirrorOrder(fld *field.Path, mirrors []Mirror, regs []string, targets []*MirrorTarget, upstreams map[string]int) field.ErrorList {
	var errs field.ErrorList
	serves := map[string]int{} // mirror location (host/prefix) -> its first entry
	for i, mt := range targets {
		if mt == nil {
			continue
		}
		p := fld.Index(i).Child("mirror")
		if j, ok := upstreams[mt.Host]; ok && regs[j] != regs[i] {
			errs = append(errs, field.Invalid(p, mirrors[i].Mirror, fmt.Sprintf("is on registry %s, which mirrors[%d] mirrors itself", mirrors[j].Registry, j)))
		} else if ok && mt.Prefix == "" {
			errs = append(errs, field.Invalid(p, mirrors[i].Mirror, "a registry cannot be its own mirror"))
		}
		loc := mt.Host + "/" + mt.Prefix
		j, seen := serves[loc]
		switch {
		case !seen:
			serves[loc] = i
		case regs[i] != "" && regs[j] == regs[i]:
			errs = append(errs, field.Duplicate(p, fmt.Sprintf("%s (mirrors[%d] lists the same mirror for %s)", mirrors[i].Mirror, j, mirrors[i].Registry)))
		case regs[i] != "" && regs[j] != "":
			errs = append(errs, field.Invalid(p, mirrors[i].Mirror, fmt.Sprintf(
				"serves %s in mirrors[%d]; one mirror location serves one registry (give each its own path prefix)", mirrors[j].Registry, j)))
		}
	}
	return errs
}

func validateConnection(p *field.Path, c Connection) field.ErrorList {
	var errs field.ErrorList
	if c.CABundle != "" {
		if !x509.NewCertPool().AppendCertsFromPEM([]byte(c.CABundle)) {
			errs = append(errs, field.Invalid(p.Child("caBundle"), "<PEM>", "holds no PEM certificate"))
		}
		if c.CAFile != "" {
			errs = append(errs, field.Forbidden(p.Child("caFile"), "set caBundle or caFile, not both"))
		}
	}
	if c.CredentialsSecret != "" {
		if msgs := validation.IsDNS1123Subdomain(c.CredentialsSecret); len(msgs) > 0 {
			errs = append(errs, field.Invalid(p.Child("credentialsSecret"), c.CredentialsSecret, strings.Join(msgs, "; ")))
		}
		if c.CredentialsFile != "" {
			errs = append(errs, field.Forbidden(p.Child("credentialsFile"), "set credentialsSecret or credentialsFile, not both"))
		}
	}
	return errs
}

// validateRegistries: each host once, and never a mirror's host, whose connection settings
// live on the mirror entry (one host, one connection).
func validateRegistries(fld *field.Path, regs []Registry, mirrors []Mirror) field.ErrorList {
	var errs field.ErrorList
	mirrorHosts := map[string]int{}
	for i, m := range mirrors {
		if mt, err := parseMirror(m.Mirror, m.Insecure); err == nil {
			if _, ok := mirrorHosts[mt.Host]; !ok {
				mirrorHosts[mt.Host] = i
			}
		}
	}
	seen := map[string]int{}
	for i, r := range regs {
		p := fld.Index(i)
		errs = append(errs, validateConnection(p, r.Connection)...)
		if r.Host == "" {
			errs = append(errs, field.Required(p.Child("host"), "a registry host[:port]"))
			continue
		}
		host, err := parseRegistry(r.Host)
		if err != nil {
			errs = append(errs, field.Invalid(p.Child("host"), r.Host, err.Error()))
			continue
		}
		if j, dup := seen[host]; dup {
			errs = append(errs, field.Duplicate(p.Child("host"), fmt.Sprintf("%s (same registry as registries[%d])", r.Host, j)))
		}
		seen[host] = i
		if j, ok := mirrorHosts[r.Host]; ok {
			errs = append(errs, field.Invalid(p.Child("host"), r.Host, fmt.Sprintf("is the host of mirrors[%d]; set its connection there", j)))
		}
	}
	return errs
}

// validateSharedHosts: several mirrors may live on one host (Harbor projects), but a host has one
// connection and one set of credentials, so their TLS and credential settings must agree.
func validateSharedHosts(fld *field.Path, mirrors []Mirror) field.ErrorList {
	var errs field.ErrorList
	first := map[string]int{}
	for i, m := range mirrors {
		mt, err := parseMirror(m.Mirror, m.Insecure)
		if err != nil {
			continue
		}
		j, seen := first[mt.Host]
		if !seen {
			first[mt.Host] = i
			continue
		}
		if mirrors[j].Connection != m.Connection {
			errs = append(errs, field.Invalid(fld.Index(i).Child("mirror"), m.Mirror, fmt.Sprintf(
				"shares host %s with mirrors[%d] but not its insecure, CA and credentials settings; one host has one connection and one set of credentials", mt.Host, j)))
		}
	}
	return errs
}

// Background lookups hold a connection and a goroutine each; these bound what a policy can ask.
const (
	maxBackgroundTimeout = 30 * time.Minute
	maxBackgroundLookups = 64
)

func validateResolve(fld *field.Path, r *Resolve) field.ErrorList {
	var errs field.ErrorList
	if d := r.Timeout.Duration; d <= 0 || d > maxTimeout {
		errs = append(errs, field.Invalid(fld.Child("timeout"), r.Timeout.Duration.String(), fmt.Sprintf("must be more than 0 and at most %s (the API server's webhook timeout is at most 30s)", maxTimeout)))
	}
	if r.CacheTTL.Duration <= 0 {
		errs = append(errs, field.Invalid(fld.Child("cacheTTL"), r.CacheTTL.Duration.String(), "must be positive; without a cache every pod would wait for the registry"))
	}
	if r.MaxStale.Duration < 0 {
		errs = append(errs, field.Invalid(fld.Child("maxStale"), r.MaxStale.Duration.String(), "may not be negative (0 turns stale-if-error off)"))
	}
	if *r.CacheSize < 1 {
		errs = append(errs, field.Invalid(fld.Child("cacheSize"), *r.CacheSize, "must be at least 1"))
	}
	if d := r.BackgroundTimeout.Duration; d < 0 || d > maxBackgroundTimeout {
		errs = append(errs, field.Invalid(fld.Child("backgroundTimeout"), d.String(), fmt.Sprintf("must be from 0 (off) to %s", maxBackgroundTimeout)))
	}
	if n := *r.BackgroundLookups; n < 1 || n > maxBackgroundLookups {
		errs = append(errs, field.Invalid(fld.Child("backgroundLookups"), n, fmt.Sprintf("must be from 1 to %d per registry", maxBackgroundLookups)))
	}
	if r.OnError != OnErrorKeep && r.OnError != OnErrorDeny {
		errs = append(errs, field.NotSupported(fld.Child("onError"), r.OnError, []OnError{OnErrorKeep, OnErrorDeny}))
	}
	if m := r.DigestMismatch; m != "" && m != PinMirrorDigest && m != PinUpstreamDigest {
		errs = append(errs, field.NotSupported(fld.Child("digestMismatch"), m, []DigestMismatch{PinMirrorDigest, PinUpstreamDigest}))
	}
	return errs
}

func validateRules(fld *field.Path, rules []Rule) field.ErrorList {
	var errs field.ErrorList
	names := sets.New[string]()
	for i, r := range rules {
		p := fld.Index(i)
		switch {
		case r.Name == "":
			errs = append(errs, field.Required(p.Child("name"), "rules are named so decisions can say which one applied"))
		case names.Has(r.Name):
			errs = append(errs, field.Duplicate(p.Child("name"), r.Name))
		}
		names.Insert(r.Name)
		switch {
		case len(r.Namespaces) > 0 && r.NamespaceSelector != nil:
			errs = append(errs, field.Forbidden(p, "set namespaces or namespaceSelector, not both"))
		case len(r.Namespaces) == 0 && r.NamespaceSelector == nil:
			errs = append(errs, field.Required(p, "one of namespaces or namespaceSelector"))
		}
		errs = append(errs, validateGlobs(p.Child("namespaces"), r.Namespaces)...)
		if r.NamespaceSelector != nil {
			if _, err := metav1.LabelSelectorAsSelector(r.NamespaceSelector); err != nil {
				errs = append(errs, field.Invalid(p.Child("namespaceSelector"), r.NamespaceSelector.String(), err.Error()))
			}
		}
		errs = append(errs, validateMode(p.Child("mode"), r.Mode, true)...)
		errs = append(errs, validatePullPolicy(p.Child("pullPolicy"), r.PullPolicy)...)
		errs = append(errs, validateSecrets(p.Child("imagePullSecrets"), r.ImagePullSecrets)...)
	}
	return errs
}

// parseRegistry returns the canonical name of a registry host: the docker.io aliases collapse.
func parseRegistry(host string) (string, error) {
	if strings.ContainsAny(host, "/@") || strings.Contains(host, "://") {
		return "", fmt.Errorf("must be a registry host[:port], without scheme or path")
	}
	reg, err := name.NewRegistry(host)
	if err != nil {
		return "", err
	}
	return CanonicalRegistry(reg.RegistryStr()), nil
}
