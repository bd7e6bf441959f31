package resolve

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"golang.org/x/sync/singleflight"

	"github.com/pullgate/pullgate/pkg/contract"
)

// The pod handler answers warm admissions through Cached; losing it would go unnoticed but for
// the load test.
var _ contract.CachedResolver = (*Resolver)(nil)

// Defaults for the zero values of Options.
const (
	DefaultCacheTTL        = 5 * time.Minute
	DefaultCacheSize       = 10000
	DefaultMaxStale        = 24 * time.Hour
	DefaultNegativeTTL     = 10 * time.Second
	DefaultTimeout         = 10 * time.Second
	DefaultBreakerFailures = 5
	DefaultBreakerCooldown = 30 * time.Second
)

// Options configure a Resolver. Zero values take the defaults above; negative ones are errors.
type Options struct {
	CacheTTL  time.Duration // how long a resolved digest is served without asking again
	CacheSize int           // entries, least recently used evicted first
	MaxStale  time.Duration // after expiry, how long a digest may still be served when the registry fails
	// NoStale turns stale-if-error off: a registry failure is always an error. (MaxStale's
	// zero value means the default, so "never stale" needs its own switch.)
	NoStale     bool
	NegativeTTL time.Duration // how long "not found" is remembered

	// FallbackToUpstream asks ResolveRequest.Upstream when the mirror fails, and uses the answer
	// only if the mirror serves that digest.
	FallbackToUpstream bool
	// VerifyDigest checks that the registry serves the digest it names for a tag before the
	// answer is used or cached (one more manifest request per resolution).
	VerifyDigest bool

	// Registries is keyed by registry host as name.Registry.RegistryStr() spells it
	// ("127.0.0.1:5000", "index.docker.io"; "docker.io" is folded into the latter). Hosts not
	// listed are reached anonymously (or through Keychain) over verified TLS only, at public
	// addresses only (see AllowPrivateUnlisted), and share the metric label "other".
	//
	// A listed registry may be at any address, and so may a token realm or redirect target it
	// names if that is its own host or another listed one (hosts compared in lower case, ports
	// 80 and 443 left out: "harbor.example.com" covers https://harbor.example.com:443/service/token,
	// "10.0.0.5:5000" covers port 5000 only). Any other host it sends pullgate to must be at a
	// public address: a registry's challenge does not get to pick a private address to fetch a
	// token from. A self-hosted token service on another private host (GitLab's
	// gitlab.example.com for registry.example.com) is listed too. go-containerregistry adds a
	// rule of its own, whatever the options: a token realm written as a loopback, private,
	// link-local or unspecified IP literal must be the registry's own host:port exactly.
	Registries map[string]Registry

	// AllowPrivateUnlisted lets pullgate connect to hosts not listed in Registries (including
	// the token realms and redirects of listed ones) at any address. Its zero value, the
	// default, allows public unicast addresses only: not loopback, private (RFC 1918), shared
	// (100.64.0.0/10), link-local (169.254.169.254 included), unique-local or site-local IPv6,
	// unspecified, multicast or reserved addresses, nor IPv4-mapped or NAT64 forms of those.
	// Pod authors choose image registries; without this guard any of them could make pullgate
	// send requests to addresses inside the cluster network and read the answers in warnings.
	// The address is checked as each connection is opened, after name resolution, so a name
	// that resolves or rebinds to a private address is refused too. Guarded requests never go
	// through an HTTP(S)_PROXY from the environment (the proxy, not pullgate, would choose the
	// address): behind such a proxy, list the registries pods pull from. A refused request
	// fails with ErrForbiddenAddress.
	AllowPrivateUnlisted bool

	// Keychain, if set, supplies credentials for registries whose Registry.Auth is nil (for
	// example KeychainFromDockerConfigJSON over a mounted file). Its answers are cached with no
	// identity of their own: give it only credentials that every pod may use.
	Keychain authn.Keychain

	// PodSecrets, if set, is consulted for requests that carry pull secrets. Its credentials
	// come first, and its identity becomes part of the cache key.
	PodSecrets PodSecrets

	// Timeout bounds one shared registry call. Callers join a call already under way for the
	// same tag and leave it when their own deadline passes; the call itself goes on until it
	// answers or this runs out, so that it is not cut short by whichever caller came first.
	// Keep it above the longest deadline callers use. Default 10s.
	Timeout time.Duration

	// BreakerFailures consecutive failed calls (timeouts, 5xx, connection and TLS errors; not
	// 404, 401 or 429) open a registry's circuit. While open, calls to it fail at once with
	// ErrCircuitOpen; after BreakerCooldown one probe is let through, and its success closes
	// the circuit. Defaults 5 and 30s.
	BreakerFailures int
	BreakerCooldown time.Duration

	// Now is the clock for cache expiry and breaker cooldowns; nil means time.Now. Deadlines
	// always use real time.
	Now func() time.Time
}

// Registry is how to reach one registry host.
type Registry struct {
	// Insecure: the registry serves plain HTTP, and is only ever spoken to that way (no HTTPS
	// attempt first). A registry that is not insecure is only ever spoken to over verified
	// HTTPS, even at a loopback or private address, where go-containerregistry would also try
	// plain HTTP: so a test or development registry on 127.0.0.1 that serves plain HTTP must
	// be listed with Insecure. It does not disable TLS verification; give CABundle for a
	// private CA.
	Insecure bool
	// CABundle is PEM, trusted in addition to the system roots.
	CABundle []byte
	// Auth is nil for anonymous access (or Options.Keychain).
	Auth authn.Authenticator
	// CredentialID identifies Auth in cache keys without revealing it: for example the
	// secret's namespace, name and resourceVersion. Change it when the credentials change.
	CredentialID string
}

// Resolver resolves tags to digests. It is safe for concurrent use; Configure swaps its
// configuration while it serves.
type Resolver struct {
	cfg        atomic.Pointer[config]
	configure  sync.Mutex // one Configure at a time
	cache      *cache
	flights    singleflight.Group
	breakers   breakers
	transports transports
	sessions   *sessions
	epoch      atomic.Uint64 // numbers credentials that have no identity of their own
	metrics    *metrics
	count      countFunc
}

// config is Options compiled; immutable once stored.
type config struct {
	cacheTTL, maxStale, negativeTTL, timeout, cooldown time.Duration
	size, failures                                     int
	fallback, verify, noStale, allowPrivate            bool
	registries                                         map[string]registry
	listed                                             map[string]bool // hostKey of every listed host
	anonymous                                          registry        // for hosts not listed
	keychain                                           authn.Keychain
	podSecrets                                         PodSecrets
	now                                                func() time.Time
	bundles                                            [][]byte // CA bundles in use, nil (system roots) included
	keychainID                                         string   // session identity of Keychain's credentials
}

type registry struct {
	insecure     bool
	auth         authn.Authenticator
	credentialID string
	// transport and guarded are the open and guarded transports for the registry's TLS
	// settings; route picks one per request.
	transport, guarded http.RoundTripper
	// sessionTag is the part of a session key that changes with the connection settings a
	// handshake depends on, scheme and CA bundle; authID identifies auth (see sessionKey).
	sessionTag string
	authID     string
}

// New returns a Resolver with an empty cache.
func New(opts Options) (*Resolver, error) {
	return newResolver(opts, publicOnly, nil)
}

// newResolver is New with the address check of guarded connections and the roots that stand in
// for the system's (nil: the system's), which tests replace.
func newResolver(opts Options, check addressCheck, roots *x509.CertPool) (*Resolver, error) {
	r := &Resolver{metrics: sharedMetrics(), sessions: newSessions()}
	r.transports.check, r.transports.proxy, r.transports.roots = check, http.ProxyFromEnvironment, roots
	r.count = requestCounter(r.metrics.requests, r.label) //nolint:bodyclose // a hook that reads status codes; it owns no body
	cfg, err := r.compile(opts)
	if err != nil {
		return nil, err
	}
	if r.cache, err = newCache(cfg.size); err != nil {
		return nil, err
	}
	r.cfg.Store(cfg)
	return r, nil
}

// Configure applies new options, for a policy reload. The cache, the circuit breakers, the
// connections of unchanged TLS configurations and the registry sessions (ping and token) of
// registries whose scheme, CA bundle and credential identity are unchanged are kept; calls under
// way finish with the configuration they started with. On error nothing changes.
func (r *Resolver) Configure(opts Options) error {
	r.configure.Lock()
	defer r.configure.Unlock()
	cfg, err := r.compile(opts)
	if err != nil {
		// compile may have built transports for bundles that are now not used.
		r.transports.keep(r.cfg.Load().bundles)
		return err
	}
	r.cache.lru.Resize(cfg.size)
	r.cfg.Store(cfg)
	r.transports.keep(cfg.bundles)
	return nil
}

func (r *Resolver) compile(opts Options) (*config, error) {
	var errs []error
	duration := func(field string, d, def time.Duration) time.Duration {
		switch {
		case d < 0:
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %s", field, d))
		case d == 0:
			return def
		}
		return d
	}
	count := func(field string, n, def int) int {
		switch {
		case n < 0:
			errs = append(errs, fmt.Errorf("%s: must not be negative, got %d", field, n))
		case n == 0:
			return def
		}
		return n
	}
	cfg := &config{
		cacheTTL:     duration("cacheTTL", opts.CacheTTL, DefaultCacheTTL),
		maxStale:     duration("maxStale", opts.MaxStale, DefaultMaxStale),
		noStale:      opts.NoStale,
		negativeTTL:  duration("negativeTTL", opts.NegativeTTL, DefaultNegativeTTL),
		timeout:      duration("timeout", opts.Timeout, DefaultTimeout),
		cooldown:     duration("breakerCooldown", opts.BreakerCooldown, DefaultBreakerCooldown),
		size:         count("cacheSize", opts.CacheSize, DefaultCacheSize),
		failures:     count("breakerFailures", opts.BreakerFailures, DefaultBreakerFailures),
		fallback:     opts.FallbackToUpstream,
		verify:       opts.VerifyDigest,
		allowPrivate: opts.AllowPrivateUnlisted,
		registries:   make(map[string]registry, len(opts.Registries)),
		listed:       make(map[string]bool, len(opts.Registries)),
		keychain:     opts.Keychain,
		podSecrets:   opts.PodSecrets,
		now:          opts.Now,
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	// A keychain has no identity of its own to compare across reloads: sessions made with its
	// credentials last one configuration.
	cfg.keychainID = fmt.Sprintf("keychain@%d", r.epoch.Add(1))
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
			insecure: reg.Insecure, auth: reg.Auth, credentialID: reg.CredentialID, transport: rt, guarded: grt,
			sessionTag: sessionTag(reg.Insecure, reg.CABundle), authID: authID,
		}
		cfg.listed[hostKey(host)] = true
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("resolver options: %w", err)
	}
	return cfg, nil
}

func (c *config) registry(host string) registry {
	if reg, ok := c.registries[host]; ok {
		return reg
	}
	return c.anonymous
}

// label is the metric label for a host: itself if configured, "other" if not.
func (r *Resolver) label(host string) string {
	if cfg := r.cfg.Load(); cfg != nil {
		if _, ok := cfg.registries[host]; ok {
			return host
		}
	}
	return otherRegistry
}

// tag re-creates t with the registry's insecure flag, so that plain HTTP is allowed exactly
// where the configuration says.
func (c *config) tag(t name.Tag) (name.Tag, error) {
	var opts []name.Option
	if c.registry(t.Context().RegistryStr()).insecure {
		opts = append(opts, name.Insecure)
	}
	return name.NewTag(t.Name(), opts...)
}

// Resolve returns the digest req.Ref names now. The answer comes from the cache while fresh;
// otherwise one registry call per tag and credential identity is shared by every concurrent
// caller. When the registry fails and an expired answer is at most MaxStale old, that answer
// comes back with Stale set and no error; that includes the caller's deadline running out
// (the error is then ErrTimeout), but not cancellation, which returns context.Canceled at
// once.
func (r *Resolver) Resolve(ctx context.Context, req contract.ResolveRequest) (contract.Resolution, error) {
	start := time.Now()
	cfg := r.cfg.Load()
	res, outcome, err := r.resolve(ctx, cfg, req)
	r.metrics.duration.WithLabelValues(r.label(req.Ref.Context().RegistryStr()), outcome).Observe(time.Since(start).Seconds())
	return res, err
}

// Cached answers req from the cache alone, without waiting for anything: a fresh digest, or a
// cached "not found". ok is false when the cache has no answer, or when the answer depends on
// the pod's pull secrets, which may have to be read first; Resolve is then the way. The pod
// handler asks here first, so that a warm admission costs no goroutine and no timer.
func (r *Resolver) Cached(req contract.ResolveRequest) (contract.Outcome, bool) {
	cfg := r.cfg.Load()
	if cfg.podSecrets != nil && len(req.PullSecrets) > 0 {
		return contract.Outcome{}, false
	}
	start := time.Now()
	res, outcome, err, ok := r.fromCache(cfg, cacheKey(cfg, req, ""), req)
	if !ok {
		return contract.Outcome{}, false
	}
	r.metrics.duration.WithLabelValues(r.label(req.Ref.Context().RegistryStr()), outcome).Observe(time.Since(start).Seconds())
	return contract.Outcome{Resolution: res, Err: err}, true
}

// cacheKey names an answer: the normalized reference (Name() is index.docker.io/library/...,
// whatever the insecure flag) and the credential identities, which keep answers obtained with
// different credentials apart.
func cacheKey(cfg *config, req contract.ResolveRequest, podID string) string {
	return req.Ref.Name() + "\x00" + cfg.registry(req.Ref.Context().RegistryStr()).credentialID + "\x00" + podID
}

// fromCache returns the cache's answer for key, if it has one, and counts it.
func (r *Resolver) fromCache(cfg *config, key string, req contract.ResolveRequest) (contract.Resolution, string, error, bool) { //nolint:revive // error-return: the flag says whether there is an answer at all
	switch found, digest := r.cache.lookup(key, cfg.now(), cfg); found {
	case lookupHit:
		r.metrics.cache.WithLabelValues("hit").Inc()
		return contract.Resolution{Digest: digest}, outcomeHit, nil, true
	case lookupNegative:
		r.metrics.cache.WithLabelValues("negative").Inc()
		return contract.Resolution{}, outcomeNotFound, fmt.Errorf("resolve %s: %w (answer cached for %s)", req.Ref, ErrNotFound, cfg.negativeTTL), true
	}
	return contract.Resolution{}, "", nil, false
}

// flightResult is what the shared call hands its callers.
type flightResult struct {
	digest   string
	fallback bool
}

// podCreds are a pod's pull secrets: a keychain over them and its identity.
type podCreds struct {
	keychain authn.Keychain
	id       string
}

func (r *Resolver) resolve(ctx context.Context, cfg *config, req contract.ResolveRequest) (contract.Resolution, string, error) {
	var pod podCreds
	var err error
	if cfg.podSecrets != nil && len(req.PullSecrets) > 0 {
		pod.keychain, pod.id, err = cfg.podSecrets(ctx, req.Namespace, req.PullSecrets)
		if err != nil {
			return contract.Resolution{}, outcomeUnauthorized, fmt.Errorf("resolve %s: %w: reading pull secrets of namespace %s: %w", req.Ref, ErrUnauthorized, req.Namespace, err)
		}
	}
	key := cacheKey(cfg, req, pod.id)
	if res, outcome, err, ok := r.fromCache(cfg, key, req); ok {
		return res, outcome, err
	}
	r.metrics.cache.WithLabelValues("miss").Inc()
	ref, err := cfg.tag(req.Ref)
	if err != nil {
		return contract.Resolution{}, outcomeError, fmt.Errorf("resolve %s: %w: %w", req.Ref, ErrRegistry, err)
	}
	if ctx.Err() != nil {
		return r.orStale(ctx, cfg, key, ref, callerError(ctx, ref))
	}

	var upstream *name.Tag
	if cfg.fallback && req.Upstream.RepositoryStr() != "" && req.Upstream.Name() != req.Ref.Name() {
		up, err := cfg.tag(req.Upstream)
		if err != nil {
			return contract.Resolution{}, outcomeError, fmt.Errorf("resolve %s: %w: %w", req.Upstream, ErrRegistry, err)
		}
		upstream = &up
	}

	ch := r.flights.DoChan(key, func() (any, error) {
		return r.flight(ctx, cfg, key, ref, upstream, pod)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return r.orStale(ctx, cfg, key, ref, res.Err)
		}
		fr := res.Val.(flightResult)
		if fr.fallback {
			return contract.Resolution{Digest: fr.digest}, outcomeFallback, nil
		}
		return contract.Resolution{Digest: fr.digest}, outcomeResolved, nil
	case <-ctx.Done():
		// The shared call goes on for the other callers and fills the cache.
		return r.orStale(ctx, cfg, key, ref, callerError(ctx, ref))
	}
}

// orStale turns a registry failure into a stale answer when one is within MaxStale. Answers
// that are not failures (not found, unauthorized) and callers that gave up get the error.
func (r *Resolver) orStale(ctx context.Context, cfg *config, key string, ref name.Tag, err error) (contract.Resolution, string, error) {
	if errors.Is(err, ErrTimeout) || errors.Is(err, ErrRegistry) || errors.Is(err, ErrCircuitOpen) {
		if digest, ok := r.cache.stale(key, cfg.now(), cfg); ok {
			r.metrics.cache.WithLabelValues("stale").Inc()
			logr.FromContextOrDiscard(ctx).V(1).Info("registry failed, serving the last digest", "image", ref.String(), "digest", digest, "error", err.Error())
			return contract.Resolution{Digest: digest, Stale: true}, outcomeStale, nil
		}
	}
	return contract.Resolution{}, outcomeOf(err), err
}

func outcomeOf(err error) string {
	switch {
	case errors.Is(err, ErrNotFound):
		return outcomeNotFound
	case errors.Is(err, ErrUnauthorized):
		return outcomeUnauthorized
	case errors.Is(err, ErrTimeout):
		return outcomeTimeout
	case errors.Is(err, ErrCircuitOpen):
		return outcomeCircuitOpen
	case errors.Is(err, context.Canceled):
		return outcomeCanceled
	case errors.Is(err, ErrForbiddenAddress):
		return outcomeForbidden
	default:
		return outcomeError
	}
}
