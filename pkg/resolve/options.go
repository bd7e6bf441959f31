package resolve

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// Defaults for the zero values of Options. The cache's sizes and ages are not here: the
// policy owns those (policy.SetDefaults) and the webhook always passes them; a zero value
// there takes the smallest useful setting below, for tests and other callers.
const (
	DefaultNegativeTTL     = 10 * time.Second
	DefaultTimeout         = 10 * time.Second
	DefaultBreakerFailures = 5
	DefaultBreakerCooldown = 30 * time.Second

	minCacheTTL  = time.Minute
	minCacheSize = 1000
)

// Options configure a Resolver. Zero values take the defaults above; negative ones are errors.
type Options struct {
	CacheTTL  time.Duration // how long a resolved digest is served without asking again
	CacheSize int           // entries, least recently used evicted first
	// MaxStale is how long after expiry a digest may still be served when the registry fails;
	// zero turns stale-if-error off.
	MaxStale    time.Duration
	NegativeTTL time.Duration // how long "not found" is remembered

	// FallbackToUpstream asks ResolveRequest.Upstream when the mirror fails, and uses the answer
	// only if the mirror serves that digest.
	FallbackToUpstream bool
	// VerifyDigest checks that the registry serves the digest it names for a tag before the
	// answer is used or cached (one more manifest request per resolution).
	VerifyDigest bool
	// DigestMismatch, when set, compares in the background the digest a mirror names for a tag
	// with ResolveRequest.Upstream's, and says which one to pin when they differ (fidelity.go).
	DigestMismatch MismatchPolicy

	// Registries is keyed by host as name.Registry.RegistryStr() spells it ("index.docker.io"
	// for docker.io). A listed registry may be at any address, and so may a token realm or
	// redirect on its own host or another listed one; anything else a registry sends pullgate
	// to must be public, or a registry's challenge could pick an address inside the cluster.
	// Unlisted hosts are reached anonymously and share the metric label "other".
	Registries map[string]Registry

	// AllowPrivateUnlisted lets unlisted hosts be at any address. By default they must be
	// public unicast (no loopback, RFC 1918, link-local, unique-local, NAT64 forms...): pod
	// authors choose registries, and could otherwise make pullgate probe the cluster network
	// and read the answers in warnings. Checked as each connection opens, after name
	// resolution; guarded requests bypass HTTP(S)_PROXY. A refusal is ErrForbiddenAddress.
	AllowPrivateUnlisted bool

	// PodSecrets, if set, is consulted for requests that carry pull secrets. Its credentials
	// come first, and its identity becomes part of the cache key.
	PodSecrets PodSecrets

	// Timeout bounds one shared registry call, which goes on for the callers that remain when
	// the first one leaves. Keep it above the longest deadline callers use.
	Timeout time.Duration

	// BackgroundTimeout, when longer than Timeout, lets a shared call to a listed registry go
	// on after its callers left, up to this long, and fill the cache: a mirror that copies a
	// whole image before it answers for the tag (Zot, Harbor) gets its first sight pinned at
	// the next admission. Zero: as Timeout (off).
	BackgroundTimeout time.Duration
	// BackgroundLookups bounds such calls per registry host; past it, calls end at Timeout.
	// Zero means DefaultBackgroundLookups.
	BackgroundLookups int

	// BreakerFailures consecutive failures (5xx, connection and TLS errors; not 404, 401 or
	// 429) open a registry's circuit: calls fail at once with ErrCircuitOpen until, after
	// BreakerCooldown, one probe succeeds. Timeouts count per repository, with the same
	// numbers, and each repository's first timeout in a row also counts for the host: a mirror
	// slow on one repository (copying a big image, waiting on its upstream for one tag) keeps
	// serving the others, and one that hangs for every repository is still left alone. While a
	// background lookup runs on a host, its other timeouts count for the host only if that
	// lookup times out too (Zot makes every tag wait behind one big copy).
	BreakerFailures int
	BreakerCooldown time.Duration

	// Now is the clock for cache expiry and breaker cooldowns; nil means time.Now. Deadlines
	// always use real time.
	Now func() time.Time
}

// Registry is how to reach one registry host.
type Registry struct {
	// Insecure: the registry serves plain HTTP and is only spoken to that way. Any other is
	// spoken to over verified HTTPS only, even on loopback, where go-containerregistry would
	// also try plain HTTP.
	Insecure bool
	// CABundle is PEM, trusted in addition to the system roots.
	CABundle []byte
	// Auth is nil for anonymous access.
	Auth authn.Authenticator
	// CredentialID identifies Auth in cache keys without revealing it: for example the
	// secret's namespace, name and resourceVersion. Change it when the credentials change.
	CredentialID string
	// PreservesDigests declares that this mirror serves its upstream's manifests byte for byte
	// (distribution; Zot with preserveDigest and compat: [docker2s2]), so that a digest
	// resolved through the upstream (FallbackToUpstream) is pinned without asking the mirror
	// for it: on Zot, a HEAD by a digest it lacks starts a full sync and answers 404 ~35 s later.
	PreservesDigests bool
}

// config is Options compiled; immutable once stored.
type config struct {
	cacheTTL, maxStale, negativeTTL, timeout, cooldown time.Duration
	size, failures, backgroundLookups                  int
	background                                         time.Duration
	fallback, verify, allowPrivate                     bool
	mismatch                                           MismatchPolicy
	registries                                         map[string]registry
	listed                                             map[string]bool // hostKey of every listed host
	anonymous                                          registry        // for hosts not listed
	podSecrets                                         PodSecrets
	now                                                func() time.Time
	bundles                                            [][]byte // CA bundles in use, nil (system roots) included
}

type registry struct {
	insecure, preservesDigests bool
	auth                       authn.Authenticator
	credentialID               string
	// transport and guarded are the open and guarded transports for the registry's TLS
	// settings; route picks one per request.
	transport, guarded http.RoundTripper
	// sessionTag is the part of a session key that changes with the connection settings a
	// handshake depends on, scheme and CA bundle; authID identifies auth (see sessionKey).
	sessionTag string
	authID     string
}

func (r *Resolver) compile(opts Options) (*config, error) {
	var errs []error
	cfg := &config{
		cacheTTL:          orDefault(&errs, "cacheTTL", opts.CacheTTL, minCacheTTL),
		maxStale:          orDefault(&errs, "maxStale", opts.MaxStale, 0),
		negativeTTL:       orDefault(&errs, "negativeTTL", opts.NegativeTTL, DefaultNegativeTTL),
		timeout:           orDefault(&errs, "timeout", opts.Timeout, DefaultTimeout),
		cooldown:          orDefault(&errs, "breakerCooldown", opts.BreakerCooldown, DefaultBreakerCooldown),
		size:              orDefault(&errs, "cacheSize", opts.CacheSize, minCacheSize),
		failures:          orDefault(&errs, "breakerFailures", opts.BreakerFailures, DefaultBreakerFailures),
		background:        orDefault(&errs, "backgroundTimeout", opts.BackgroundTimeout, 0),
		backgroundLookups: orDefault(&errs, "backgroundLookups", opts.BackgroundLookups, DefaultBackgroundLookups),
		fallback:          opts.FallbackToUpstream,
		verify:            opts.VerifyDigest,
		mismatch:          opts.DigestMismatch,
		allowPrivate:      opts.AllowPrivateUnlisted,
		registries:        make(map[string]registry, len(opts.Registries)),
		listed:            make(map[string]bool, len(opts.Registries)),
		podSecrets:        opts.PodSecrets,
		now:               opts.Now,
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	rt, grt, err := r.transports.get(nil, r.count)
	if err != nil {
		return nil, err
	}
	cfg.anonymous = registry{transport: rt, guarded: grt, sessionTag: sessionTag(false, nil)}
	cfg.bundles = [][]byte{nil}
	for key, reg := range opts.Registries {
		nr, err := name.NewRegistry(key)
		if err != nil {
			errs = append(errs, fmt.Errorf("registries[%q]: %w", key, err))
			continue
		}
		host := nr.RegistryStr()
		if _, dup := cfg.registries[host]; dup {
			errs = append(errs, fmt.Errorf("registries[%q]: %s is listed twice", key, host))
			continue
		}
		rt, grt, err := r.transports.get(reg.CABundle, r.count)
		if err != nil {
			errs = append(errs, bundleError(host, err))
			continue
		}
		cfg.bundles = append(cfg.bundles, reg.CABundle)
		authID := "registry:" + reg.CredentialID
		if reg.Auth != nil && reg.CredentialID == "" {
			// Credentials without an identity may have changed with any reload.
			authID = fmt.Sprintf("registry@%d", r.epoch.Add(1))
		}
		cfg.registries[host] = registry{
			insecure: reg.Insecure, preservesDigests: reg.PreservesDigests, auth: reg.Auth, credentialID: reg.CredentialID, transport: rt, guarded: grt,
			sessionTag: sessionTag(reg.Insecure, reg.CABundle), authID: authID,
		}
		cfg.listed[hostKey(host)] = true
	}
	if m := opts.DigestMismatch; m != "" && m != PinMirror && m != PinUpstream {
		errs = append(errs, fmt.Errorf("digestMismatch: %q is neither %q nor %q", m, PinMirror, PinUpstream))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("resolver options: %w", err)
	}
	return cfg, nil
}

// orDefault is v, or def for zero; a negative v is an error.
func orDefault[T int | time.Duration](errs *[]error, field string, v, def T) T {
	switch {
	case v < 0:
		*errs = append(*errs, fmt.Errorf("%s: must not be negative, got %v", field, v))
	case v == 0:
		return def
	}
	return v
}
