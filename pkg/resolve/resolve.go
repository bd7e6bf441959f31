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
var (
	_ contract.CachedResolver = (*Resolver)(nil)
	_ contract.StaleResolver  = (*Resolver)(nil)
)

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
	slots      slots    // lookups per host running past the admission budget
	pending    sync.Map // cache key -> time.Time: a lookup runs in the background until then
	fidelity   *fidelity
}

// New returns a Resolver with an empty cache.
func New(opts Options) (*Resolver, error) {
	return newResolver(opts, publicOnly, nil)
}

// newResolver is New with the address check of guarded connections and the roots that stand in
// for the system's (nil: the system's), which tests replace.
func newResolver(opts Options, check addressCheck, roots *x509.CertPool) (*Resolver, error) {
	r := &Resolver{metrics: sharedMetrics(), sessions: newSessions(), fidelity: newFidelity()}
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
	var res contract.Resolution
	var outcome string
	var err error
	if len(req.Alternates) == 0 {
		res, outcome, err = r.resolve(ctx, cfg, req)
	} else {
		res, outcome, err = r.failover(ctx, cfg, req)
	}
	r.metrics.duration.WithLabelValues(r.label(req.Candidate(res.Served()).Context().RegistryStr()), outcome).Observe(time.Since(start).Seconds())
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
	if len(req.Alternates) > 0 {
		return r.cachedFailover(cfg, req)
	}
	start := time.Now()
	res, outcome, err, ok := r.fromCache(cfg, cacheKey(cfg, req.Ref, ""), req.Ref)
	if !ok {
		return contract.Outcome{}, false
	}
	r.metrics.duration.WithLabelValues(r.label(req.Ref.Context().RegistryStr()), outcome).Observe(time.Since(start).Seconds())
	return contract.Outcome{Resolution: res, Err: err}, true
}

// Stale returns the last digest for req that MaxStale still allows, without asking the registry.
// With alternates, the candidates whose circuits are closed come first, each in order.
func (r *Resolver) Stale(req contract.ResolveRequest) (contract.Resolution, bool) {
	cfg := r.cfg.Load()
	if cfg.podSecrets != nil && len(req.PullSecrets) > 0 {
		return contract.Resolution{}, false
	}
	for _, i := range r.preferred(cfg, req) {
		e, ok := r.cache.stale(cacheKey(cfg, req.Candidate(i), ""), cfg.now(), cfg)
		if !ok {
			continue
		}
		res, err := e.answer(true)
		if err != nil {
			continue
		}
		r.metrics.cache.WithLabelValues("stale").Inc()
		res.Failover = failedOver(i, nil)
		return res, true
	}
	return contract.Resolution{}, false
}

// cacheKey names an answer: the normalized reference (Name() is index.docker.io/library/...,
// whatever the insecure flag) and the credential identities, which keep answers obtained with
// different credentials apart.
func cacheKey(cfg *config, ref name.Tag, podID string) string {
	return ref.Name() + "\x00" + cfg.registry(ref.Context().RegistryStr()).credentialID + "\x00" + podID
}

// fromCache returns the cache's answer for key, ref's, if it has one, and counts it.
func (r *Resolver) fromCache(cfg *config, key string, ref name.Tag) (contract.Resolution, string, error, bool) { //nolint:revive // error-return: the flag says whether there is an answer at all
	switch found, e := r.cache.lookup(key, cfg.now(), cfg); found {
	case lookupHit:
		r.metrics.cache.WithLabelValues("hit").Inc()
		res, err := e.answer(false)
		if err != nil {
			return res, outcomeDiverged, err, true
		}
		return res, outcomeHit, nil, true
	case lookupNegative:
		r.metrics.cache.WithLabelValues("negative").Inc()
		return contract.Resolution{}, outcomeNotFound, fmt.Errorf("resolve %s: %w (answer cached for %s)", ref, ErrNotFound, cfg.negativeTTL), true
	}
	return contract.Resolution{}, "", nil, false
}

// flightResult is what the shared call hands its callers.
type flightResult struct {
	digest   string
	fallback bool
	differs  *verdict // the mirror's digest differs from the upstream's (fidelity.go)
}

// upstream is where a mirror's image comes from, when the options let pullgate ask it.
type upstream struct {
	tag *name.Tag // nil: not to be asked
	// fallback: asked when the mirror fails (fallbackToUpstream, and only after a request's last
	// mirror); otherwise only compared with the mirror's digest.
	fallback bool
}

// podCreds are a pod's pull secrets: a keychain over them and its identity.
type podCreds struct {
	keychain authn.Keychain
	id       string
}

func (r *Resolver) resolve(ctx context.Context, cfg *config, req contract.ResolveRequest) (contract.Resolution, string, error) {
	pod, err := r.podCreds(ctx, cfg, req)
	if err != nil {
		return contract.Resolution{}, outcomeUnauthorized, err
	}
	key := cacheKey(cfg, req.Ref, pod.id)
	if res, outcome, err, ok := r.fromCache(cfg, key, req.Ref); ok {
		return res, outcome, err
	}
	up, err := upstreamOf(cfg, req, req.Ref)
	if err != nil {
		return contract.Resolution{}, outcomeError, err
	}
	return r.ask(ctx, cfg, key, req.Ref, upstream{tag: up, fallback: cfg.fallback}, pod, true)
}

// podCreds reads the pod's pull secrets, when the request carries them and the options allow.
func (r *Resolver) podCreds(ctx context.Context, cfg *config, req contract.ResolveRequest) (podCreds, error) {
	var pod podCreds
	if cfg.podSecrets != nil && len(req.PullSecrets) > 0 {
		var err error
		pod.keychain, pod.id, err = cfg.podSecrets(ctx, req.Namespace, req.PullSecrets)
		if err != nil {
			return pod, fmt.Errorf("resolve %s: %w: reading pull secrets of namespace %s: %w", req.Ref, ErrUnauthorized, req.Namespace, err)
		}
	}
	return pod, nil
}

// upstreamOf is the upstream to fall back to when ref's mirror fails, or to compare its digest
// with (fidelity.go), nil when the options or the request allow neither.
func upstreamOf(cfg *config, req contract.ResolveRequest, ref name.Tag) (*name.Tag, error) {
	if (!cfg.fallback && cfg.mismatch == "") || req.Upstream.RepositoryStr() == "" || req.Upstream.Name() == ref.Name() {
		return nil, nil
	}
	up, err := cfg.tag(req.Upstream)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w: %w", req.Upstream, ErrRegistry, err)
	}
	return &up, nil
}

// ask asks the registry for ref's digest on a cache miss, through the flight shared by every
// caller of key. With stale, a registry failure is answered from an expired entry when
// MaxStale allows.
func (r *Resolver) ask(ctx context.Context, cfg *config, key string, ref name.Tag, up upstream, pod podCreds, stale bool) (contract.Resolution, string, error) {
	fail := func(err error) (contract.Resolution, string, error) {
		if stale {
			return r.orStale(ctx, cfg, key, ref, err)
		}
		return contract.Resolution{}, outcomeOf(err), err
	}
	r.metrics.cache.WithLabelValues("miss").Inc()
	t, err := cfg.tag(ref)
	if err != nil {
		return contract.Resolution{}, outcomeError, fmt.Errorf("resolve %s: %w: %w", ref, ErrRegistry, err)
	}
	ref = t
	if ctx.Err() != nil {
		return fail(callerError(ctx, ref))
	}
	ch := r.flights.DoChan(key, func() (any, error) {
		return r.flight(ctx, cfg, key, ref, up, pod)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return fail(res.Err)
		}
		fr := res.Val.(flightResult)
		if fr.fallback {
			return contract.Resolution{Digest: fr.digest}, outcomeFallback, nil
		}
		out, err := entry{digest: fr.digest, differs: fr.differs}.answer(false)
		if err != nil {
			return out, outcomeDiverged, err
		}
		return out, outcomeResolved, nil
	case <-ctx.Done():
		// The shared call goes on for the other callers and fills the cache.
		res, outcome, err := fail(callerError(ctx, ref))
		if errors.Is(err, ErrTimeout) {
			host := ref.Context().RegistryStr()
			r.metrics.firstSight.WithLabelValues(r.label(host)).Inc()
			if until, ok := r.pending.Load(key); ok {
				err = fmt.Errorf("%w; %w: pullgate keeps asking %s until %s and caches the answer, so the next admission of this tag is pinned",
					err, ErrPending, host, until.(time.Time).UTC().Format(time.RFC3339))
			}
		}
		return res, outcome, err
	}
}

// orStale turns a registry failure into a stale answer when one is within MaxStale. Answers
// that are not failures (not found, unauthorized) and callers that gave up get the error.
func (r *Resolver) orStale(ctx context.Context, cfg *config, key string, ref name.Tag, err error) (contract.Resolution, string, error) {
	if errors.Is(err, ErrTimeout) || errors.Is(err, ErrRegistry) || errors.Is(err, ErrCircuitOpen) {
		if e, ok := r.cache.stale(key, cfg.now(), cfg); ok {
			if res, aerr := e.answer(true); aerr == nil {
				r.metrics.cache.WithLabelValues("stale").Inc()
				logr.FromContextOrDiscard(ctx).V(1).Info("registry failed, serving the last digest", "image", ref.String(), "digest", res.Digest, "error", err.Error())
				return res, outcomeStale, nil
			}
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
	case errors.Is(err, ErrDiverged):
		return outcomeDiverged
	default:
		return outcomeError
	}
}
