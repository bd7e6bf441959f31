package resolve

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"mime"
	"net/http"
	"net/url"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// retryDelay is the pause before the one retry a registry call gets. go-containerregistry's
// own retries (1 s then 3 s, sleeping without looking at the context) are off: the transport
// handed to remote is a transport.Wrapper, which remote does not wrap again.
const retryDelay = 50 * time.Millisecond

// flight is the shared call behind every concurrent Resolve of one key. It runs under its own
// deadline, detached from the first caller's cancellation but keeping its values (logger).
func (r *Resolver) flight(ctx context.Context, cfg *config, key string, ref name.Tag, up upstream, pod podCreds) (any, error) {
	begun := time.Now()
	timeout := cfg.timeout
	var end []func()
	var mirrorErr error // the mirror call's, set before end runs
	if host := ref.Context().RegistryStr(); cfg.background > cfg.timeout && cfg.registries[host].transport != nil && r.slots.take(host, cfg.backgroundLookups) {
		// A first sight that does not fit the admission budget (a mirror that copies the whole
		// image before it answers) goes on after its callers leave, so that the next admission
		// finds the answer in the cache. Bounded per mirror in time and in number.
		timeout = cfg.background
		ctx = context.WithValue(ctx, inBackground{}, true)
		r.pending.Store(key, begun.Add(timeout))
		end = append(end, func() {
			r.pending.Delete(key)
			r.countHeld(ctx, cfg, host, r.slots.give(host, errors.Is(mirrorErr, ErrTimeout)))
		})
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	end = append(end, cancel)
	done := func() {
		for _, f := range end {
			f()
		}
	}
	log := logr.FromContextOrDiscard(ctx)

	// A caller that missed the cache just before the previous call for this key stored its
	// answer starts a new call; it must not ask the registry again.
	switch found, e := r.cache.lookup(key, cfg.now(), cfg); found {
	case lookupHit:
		done()
		return flightResult{digest: e.digest, differs: e.differs}, nil
	case lookupNegative:
		done()
		return nil, fmt.Errorf("resolve %s: %w (answer cached for %s)", ref, ErrNotFound, cfg.negativeTTL)
	}

	// The mirror is asked in a goroutine of its own, which ends the flight's deadline and
	// background slot when it returns: with a fallback it may outlive the flight.
	mirror := make(chan fetched, 1)
	go func() {
		defer done()
		digest, err := r.call(ctx, cfg, ref, pod)
		mirrorErr = err
		if err == nil && cfg.verify {
			if verr := r.verify(ctx, cfg, ref, digest, pod); verr != nil {
				err = fmt.Errorf("%s names %s for the tag but does not serve it: %w", ref, digest, verr)
			}
		}
		var differs *verdict
		if err == nil {
			differs = r.store(cfg, key, digest)
			if up.tag != nil {
				r.compare(ctx, cfg, key, ref, *up.tag, digest, pod)
			}
		}
		mirror <- fetched{digest, err, differs}
	}()
	var wait <-chan time.Time
	if up.fallback && up.tag != nil {
		// The mirror gets half the admission budget, so that fallbackToUpstream keeps the
		// other half: a mirror that copies a big image before it answers must not starve it.
		t := time.NewTimer(cfg.timeout / 2)
		defer t.Stop()
		wait = t.C
	}
	var err error
	select {
	case m := <-mirror:
		if m.err == nil {
			return flightResult{digest: m.digest, differs: m.differs}, nil
		}
		err = m.err
	case <-wait:
	}
	if up.fallback && up.tag != nil {
		// Not under ctx: the mirror's goroutine ends that when the mirror answers.
		uctx, ucancel := context.WithDeadline(context.WithoutCancel(ctx), begun.Add(cfg.timeout))
		d, ferr := r.call(uctx, cfg, *up.tag, pod)
		if ferr == nil && !cfg.registries[ref.Context().RegistryStr()].preservesDigests {
			// Pin only what the node will pull from the mirror: a mirror that does not declare
			// that it serves the upstream's digests unchanged must serve this one.
			if verr := r.verify(uctx, cfg, ref, d, pod); verr != nil {
				ferr = fmt.Errorf("the mirror does not serve the upstream's %s: %w", d, verr)
			}
		}
		ucancel()
		if ferr == nil {
			if err == nil {
				err = errors.New("no answer within half the budget")
			}
			log.V(1).Info("mirror failed, resolved through the upstream", "image", ref.String(), "upstream", up.tag.String(), "digest", d, "error", err.Error())
			// The mirror's own answer, when it comes, replaces this one.
			r.cache.put(key, entry{digest: d, stored: cfg.now()})
			return flightResult{digest: d, fallback: true}, nil
		}
		if err == nil {
			// The mirror is still at it: its answer (or the background deadline) decides.
			m := <-mirror
			if m.err == nil {
				return flightResult{digest: m.digest, differs: m.differs}, nil
			}
			err = m.err
		}
		// The mirror's failure is the one that decides the error class; the fallback's is
		// kept as text so that errors.Is does not see two answers.
		err = fmt.Errorf("%w; upstream fallback: %v", err, ferr) //nolint:errorlint // one class, see above
	}
	if errors.Is(err, ErrNotFound) {
		r.cache.put(key, entry{stored: cfg.now()})
	}
	return nil, err
}

// fetched is what one registry lookup found.
type fetched struct {
	digest  string
	err     error
	differs *verdict
}

// verify checks that ref's registry serves digest in ref's repository. go-containerregistry
// checks that what answers is that digest. The error keeps the class of the registry's answer:
// a 404 is ErrNotFound, and is cached as such.
func (r *Resolver) verify(ctx context.Context, cfg *config, ref name.Tag, digest string, pod podCreds) error {
	_, err := r.call(ctx, cfg, ref.Context().Digest(digest), pod)
	return err
}

// call asks ref's registry for ref's manifest digest under its circuit breaker, with at most one quick
// retry, and returns a classified error.
func (r *Resolver) call(ctx context.Context, cfg *config, ref name.Reference, pod podCreds) (string, error) {
	host := ref.Context().RegistryStr()
	br := r.breakers.get(host, r.label(host))
	if ok, until := br.allow(cfg.now()); !ok {
		return "", fmt.Errorf("resolve %s: %w: %s failed %d calls in a row and is left alone until %s", ref, ErrCircuitOpen, host, cfg.failures, until.UTC().Format(time.RFC3339))
	}
	// Timeouts count per repository: a mirror that copies one big image before answering for
	// it (Zot, Harbor) or waits on its upstream for one tag is slow for that repository only,
	// and must not take every other repository on the mirror out of pinning. Answers that fail
	// (5xx, refused connections, TLS) count against the host.
	slow := r.breakers.get(host+"/"+ref.Context().RepositoryStr(), "")
	if ok, until := slow.allow(cfg.now()); !ok {
		br.release()
		return "", fmt.Errorf("resolve %s: %w: %s timed out on %s %d times in a row; that repository is left alone until %s", ref, ErrCircuitOpen, host, ref.Context().RepositoryStr(), cfg.failures, until.UTC().Format(time.RFC3339))
	}
	digest, f := r.attempt(ctx, cfg, ref, pod)
	if f.unsent {
		br.release()
		slow.release()
		// The error says what to list; the log has the chain, with the address refused.
		var ferr *forbidden
		if errors.As(f.err, &ferr) {
			logr.FromContextOrDiscard(ctx).V(1).Info("registry address refused", "registry", host, "error", ferr.err.Error())
		}
		return "", f.err
	}
	if f.trips && errors.Is(f.err, ErrTimeout) {
		// A repository's first timeout in a row also counts against the host, its next ones
		// do not: one slow repository adds at most one, while a mirror that hangs for every
		// repository still opens its host's breaker after that many distinct repositories.
		// Not while a lookup of ours runs in the background there (see inBackground).
		first := slow.idle()
		r.settle(ctx, cfg, slow, host, f)
		if first && (ctx.Value(inBackground{}) != nil || !r.slots.hold(host)) {
			r.settle(ctx, cfg, br, host, f)
		} else {
			br.release()
		}
	} else {
		r.settle(ctx, cfg, br, host, f)
		r.breakers.notClosed.Add(int64(slow.done(cfg.now(), false, cfg.failures, cfg.cooldown)))
	}
	return digest, f.err
}

// countHeld counts n held timeouts for host's breaker (see inBackground).
func (r *Resolver) countHeld(ctx context.Context, cfg *config, host string, n int) {
	br := r.breakers.get(host, r.label(host))
	for range n {
		r.settle(ctx, cfg, br, host, failure{err: fmt.Errorf("%w: %s timed out behind a lookup that timed out too", ErrTimeout, host), trips: true})
	}
}

// settle records the outcome of a call the breaker allowed, which reached the registry.
func (r *Resolver) settle(ctx context.Context, cfg *config, br *breaker, host string, f failure) {
	change := br.done(cfg.now(), f.trips, cfg.failures, cfg.cooldown)
	r.breakers.notClosed.Add(int64(change))
	if br.label == "" {
		// A repository's breaker: the gauge counts hosts.
		if change == 1 {
			logr.FromContextOrDiscard(ctx).Info("repository circuit opened after timeouts", "registry", host, "cooldown", cfg.cooldown.String(), "error", f.err.Error())
		}
		return
	}
	switch change {
	case 1:
		r.metrics.circuitOpen.WithLabelValues(br.label).Inc()
		logr.FromContextOrDiscard(ctx).Info("registry circuit opened", "registry", host, "cooldown", cfg.cooldown.String(), "error", f.err.Error())
	case -1:
		r.metrics.circuitOpen.WithLabelValues(br.label).Dec()
		logr.FromContextOrDiscard(ctx).Info("registry circuit closed", "registry", host)
	}
}

func (r *Resolver) attempt(ctx context.Context, cfg *config, ref name.Reference, pod podCreds) (string, failure) {
	reg := cfg.registry(ref.Context().RegistryStr())
	_, listed := cfg.registries[ref.Context().RegistryStr()]
	auth, identity, err := cfg.auth(ctx, reg, ref.Context(), pod)
	if err != nil {
		return "", failure{err: fmt.Errorf("resolve %s: %w: credentials for %s: %w", ref, ErrUnauthorized, ref.Context().RegistryStr(), err)}
	}
	key := sessionKey(reg, ref.Context(), identity)
	for retried := false; ; retried = true {
		start := time.Now()
		digest, err := r.authenticated(ctx, cfg, reg, auth, key, ref)
		if err == nil {
			return digest, failure{}
		}
		f := classify(ctx, ref, listed, redact(err, auth))
		if retried || !f.retry || !timeLeft(ctx, time.Since(start)) {
			return "", f
		}
		t := time.NewTimer(retryDelay + rand.N(retryDelay)) //nolint:gosec // jitter, not a secret
		select {
		case <-ctx.Done():
			t.Stop()
			return "", classify(ctx, ref, listed, ctx.Err())
		case <-t.C:
		}
	}
}

// timeLeft reports whether a retry fits before the deadline: the pause plus twice what the
// first try took.
func timeLeft(ctx context.Context, took time.Duration) bool {
	deadline, ok := ctx.Deadline()
	return ok && time.Until(deadline) > 2*retryDelay+2*took
}

// auth picks credentials the way the kubelet does: the pod's own pull secrets first, then
// the registry's configured credentials, then anonymous. It also
// returns where they came from, as an identity for session keys that never shows a secret.
func (c *config) auth(ctx context.Context, reg registry, repo name.Repository, pod podCreds) (authn.Authenticator, string, error) {
	if pod.keychain != nil {
		a, err := authn.Resolve(ctx, pod.keychain, repo)
		if err != nil {
			return nil, "", err
		}
		if a != authn.Anonymous {
			return a, "pod:" + pod.id, nil
		}
	}
	if reg.auth != nil {
		return reg.auth, reg.authID, nil
	}
	return authn.Anonymous, "anonymous", nil
}

// authenticated asks for the digest on the session for key: a live one from an earlier call, so that a miss
// costs the one request it needs, or a new handshake. A session is dropped when the registry
// refuses it or cannot be reached through it; a reused one that is refused (a token that
// expired or was revoked, a registry whose authentication changed) gets one fresh handshake
// straight away, so that the refusal does not reach the caller.
func (r *Resolver) authenticated(ctx context.Context, cfg *config, reg registry, auth authn.Authenticator, key string, ref name.Reference) (string, error) {
	rt, reused := r.sessions.rts.get(key)
	for {
		if rt == nil {
			var err error
			if rt, err = r.session(ctx, cfg, reg, auth, key, ref.Context()); err != nil {
				return "", err
			}
		}
		digest, err := manifestDigest(ctx, rt, ref)
		if err == nil || sessionHolds(err) {
			return digest, err
		}
		r.sessions.forget(key, rt, reg, ref.Context())
		var terr *transport.Error
		if !reused || ctx.Err() != nil || !errors.As(err, &terr) || !denied(terr) {
			return "", err
		}
		rt, reused = nil, false
	}
}

// sessionHolds reports whether a failed request leaves its session good: the registry answered
// through it with something other than a refusal.
func sessionHolds(err error) bool {
	if errors.Is(err, errUnsupported) {
		return true
	}
	var terr *transport.Error
	return errors.As(err, &terr) && !denied(terr)
}

// manifestDigest asks for the digest with HEAD, and GETs the manifest only when the HEAD
// answer carries none. The digest is the one the reference names: for a multi-arch tag, the
// index. Given a digest reference it checks that the registry serves it (remote compares the
// answer with the digest asked for).
func manifestDigest(ctx context.Context, rt http.RoundTripper, ref name.Reference) (string, error) {
	opts := []remote.Option{remote.WithContext(ctx), remote.WithTransport(rt)}
	desc, err := remote.Head(ref, opts...)
	if err == nil {
		return pinnable(desc.MediaType, desc.Digest)
	}
	if !headHadNoDigest(ctx, err) {
		return "", err
	}
	full, err := remote.Get(ref, opts...)
	if err != nil {
		return "", err
	}
	return pinnable(full.MediaType, full.Digest)
}

// headHadNoDigest tells a HEAD that answered without a usable digest (go-containerregistry
// reports a 200 lacking Docker-Content-Digest, Content-Type or Content-Length as a plain
// error), or a registry that does not do HEAD, from a HEAD that failed.
func headHadNoDigest(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		return terr.StatusCode == http.StatusMethodNotAllowed
	}
	var uerr *url.Error
	return !errors.As(err, &uerr)
}

// pinnable accepts the manifest and index media types of OCI and Docker v2, with a sha256
// digest: what a kubelet can pull by digest and the Resolution contract promises.
func pinnable(mt types.MediaType, digest v1.Hash) (string, error) {
	base, _, err := mime.ParseMediaType(string(mt))
	if err != nil {
		base = string(mt)
	}
	switch types.MediaType(base) {
	case types.OCIImageIndex, types.OCIManifestSchema1, types.DockerManifestList, types.DockerManifestSchema2:
	default:
		return "", fmt.Errorf("%w: media type %q", errUnsupported, mt)
	}
	if digest.Algorithm != "sha256" {
		return "", fmt.Errorf("%w: digest algorithm %q", errUnsupported, digest.Algorithm)
	}
	return digest.String(), nil
}
