package resolve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/pullgate/pullgate/pkg/contract"
)

// Digest fidelity: a mirror may name another digest for a tag than its upstream (Zot's default
// sync converts Docker v2 manifests and lists to OCI and drops attestations from indexes;
// Harbor may serve a trimmed multi-arch list), and a pin to it breaks signature verification
// keyed on the upstream's digest. After a mirror resolution the resolver compares the two, in
// the background and once per (tag, credential identity, mirror digest); what it finds rides
// on the cache entry, so the next admissions of the tag carry it at no cost.

// MismatchPolicy says which digest to pin when a mirror's differs from its upstream's.
type MismatchPolicy string

const (
	// PinMirror pins the mirror's digest, what the node pulls, and warns.
	PinMirror MismatchPolicy = "Mirror"
	// PinUpstream pins the upstream's digest when the mirror serves it too (asked by digest:
	// on Zot that starts a sync); otherwise the tag is not pinned, and onError applies.
	PinUpstream MismatchPolicy = "Upstream"
)

// ErrDiverged says, under PinUpstream, that the mirror's digest for a tag differs from the
// upstream's and that the mirror does not serve the upstream's.
var ErrDiverged = errors.New("the mirror's digest differs from the upstream's")

// maxCompared bounds the comparisons remembered; forgetting one costs one more comparison.
const maxCompared = 10000

// verdict is what a comparison found when the digests differ.
type verdict struct {
	mismatch *contract.DigestMismatch
	refuse   error // PinUpstream, and the mirror lacks the upstream's digest
}

// answer is the resolution an entry gives: its digest, or what its verdict makes of it.
func (e entry) answer(stale bool) (contract.Resolution, error) {
	if e.differs == nil {
		return contract.Resolution{Digest: e.digest, Stale: stale}, nil
	}
	m := e.differs.mismatch
	if e.differs.refuse != nil {
		return contract.Resolution{Mismatch: m}, e.differs.refuse
	}
	digest := e.digest
	if m.PinnedUpstream {
		digest = m.UpstreamDigest
	}
	return contract.Resolution{Digest: digest, Stale: stale, Mismatch: m}, nil
}

// fidelity remembers comparisons by cache key and mirror digest: nil while one runs, the
// verdict (nil when the digests agree) once done. Failed ones are forgotten, for the next
// mirror resolution to try again.
type fidelity struct {
	mu    sync.Mutex
	seen  *lru.Cache[string, *compared]
	slots slots // comparisons running per upstream host
}

// compared is a comparison's end, under the policy it was made for: a reload that changes
// DigestMismatch compares again.
type compared struct {
	differs *verdict
	policy  MismatchPolicy
}

func newFidelity() *fidelity {
	seen, _ := lru.New[string, *compared](maxCompared) // only a size below 1 fails
	return &fidelity{seen: seen}
}

// store caches a digest the mirror named, with what an earlier comparison found of it, and
// returns that. Under the lock, so that a comparison ending now is not lost.
func (r *Resolver) store(cfg *config, key, digest string) *verdict {
	r.fidelity.mu.Lock()
	defer r.fidelity.mu.Unlock()
	var differs *verdict
	if cfg.mismatch != "" { // the key costs an allocation
		if c, ok := r.fidelity.seen.Peek(key + "\x00" + digest); ok && c != nil && c.policy == cfg.mismatch {
			differs = c.differs
		}
	}
	r.cache.put(key, entry{digest: digest, stored: cfg.now(), differs: differs})
	return differs
}

// compare starts, unless one ran or runs, a comparison of the digest the mirror named for ref
// with upstream's, at most backgroundLookups at a time per upstream host (past that it is left
// to the next resolution). It never waits.
func (r *Resolver) compare(ctx context.Context, cfg *config, key string, ref, upstream name.Tag, digest string, pod podCreds) {
	if cfg.mismatch == "" {
		return
	}
	f, id := r.fidelity, key+"\x00"+digest
	host := upstream.Context().RegistryStr()
	f.mu.Lock()
	if c, ok := f.seen.Peek(id); (ok && (c == nil || c.policy == cfg.mismatch)) || !f.slots.take(host, cfg.backgroundLookups) {
		f.mu.Unlock()
		return
	}
	f.seen.Add(id, nil)
	f.mu.Unlock()
	go func() {
		defer f.slots.give(host, false)
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), max(cfg.timeout, cfg.background))
		defer cancel()
		log := logr.FromContextOrDiscard(ctx).WithValues("image", ref.String(), "upstream", upstream.String(), "digest", digest)
		differs, err := r.check(ctx, cfg, ref, upstream, digest, pod)
		f.mu.Lock()
		defer f.mu.Unlock()
		if err != nil {
			f.seen.Remove(id)
			log.V(1).Info("comparing the mirror's digest with the upstream's failed", "error", err.Error())
			return
		}
		f.seen.Add(id, &compared{differs: differs, policy: cfg.mismatch})
		if differs == nil {
			return
		}
		m := differs.mismatch
		r.metrics.mismatch.WithLabelValues(r.label(m.Mirror), m.Cause).Inc()
		log.Info("mirror digest differs from the upstream's", "registry", m.Mirror, "upstreamDigest", m.UpstreamDigest, "cause", m.Cause, "declaredPreserved", m.Declared)
		if e, ok := r.cache.lru.Peek(key); ok && e.digest == digest {
			e.differs = differs
			r.cache.put(key, e)
		}
	}()
}

// check compares the mirror's digest for ref with upstream's, by HEAD (whose Content-Type is
// the media type), and names the likely cause when they differ: a Docker manifest upstream
// and an OCI one on the mirror is a conversion; two indexes, the mirror's with fewer entries
// or without the upstream's attestations, a trimmed index.
func (r *Resolver) check(ctx context.Context, cfg *config, ref, upstream name.Tag, digest string, pod podCreds) (*verdict, error) {
	up, err := r.describe(ctx, cfg, upstream, pod)
	if err != nil || up.Digest.String() == digest {
		return nil, err
	}
	mirrorRef := ref.Context().Digest(digest)
	mine, err := r.describe(ctx, cfg, mirrorRef, pod)
	if err != nil {
		return nil, err
	}
	m := &contract.DigestMismatch{
		Mirror: ref.Context().RegistryStr(), Upstream: upstream.String(), MirrorDigest: digest, UpstreamDigest: up.Digest.String(),
		Cause: contract.CauseDiffers, Declared: cfg.registry(ref.Context().RegistryStr()).preservesDigests,
	}
	switch {
	case docker(up.MediaType) && !docker(mine.MediaType):
		m.Cause = contract.CauseConversion
	case up.MediaType.IsIndex() && mine.MediaType.IsIndex():
		upIdx, err := r.index(ctx, cfg, upstream.Context().Digest(m.UpstreamDigest), pod)
		if err != nil {
			return nil, err
		}
		mineIdx, err := r.index(ctx, cfg, mirrorRef, pod)
		if err != nil {
			return nil, err
		}
		if len(mineIdx.Manifests) < len(upIdx.Manifests) || (attestations(mineIdx) == 0 && attestations(upIdx) > 0) {
			m.Cause = contract.CauseTrimmedIndex
		}
	}
	v := &verdict{mismatch: m}
	if cfg.mismatch != PinUpstream {
		return v, nil
	}
	// On Zot, this HEAD by a digest it lacks starts a sync of the upstream's; it answers when
	// that ends, within the background deadline.
	_, err = r.describe(ctx, cfg, ref.Context().Digest(m.UpstreamDigest), pod)
	switch {
	case err == nil:
		m.PinnedUpstream = true
	case errors.Is(err, ErrNotFound):
		v.refuse = fmt.Errorf("%w: %s, and the mirror does not serve the upstream's digest (resolve.digestMismatch: Upstream)", ErrDiverged, m)
	default:
		return nil, err
	}
	return v, nil
}

// docker reports whether mt is a Docker v2 manifest or list.
func docker(mt types.MediaType) bool {
	return mt == types.DockerManifestSchema2 || mt == types.DockerManifestList
}

// attestations counts an index's attestation manifests, as BuildKit writes them.
func attestations(idx *v1.IndexManifest) int {
	n := 0
	for _, d := range idx.Manifests {
		if d.Annotations["vnd.docker.reference.type"] == "attestation-manifest" || (d.Platform != nil && d.Platform.OS == "unknown" && d.Platform.Architecture == "unknown") {
			n++
		}
	}
	return n
}

// describe HEADs ref's manifest, advisory.
func (r *Resolver) describe(ctx context.Context, cfg *config, ref name.Reference, pod podCreds) (*v1.Descriptor, error) {
	var desc *v1.Descriptor
	err := r.read(ctx, cfg, ref, pod, true, func(ctx context.Context, rt http.RoundTripper) error {
		var err error
		desc, err = remote.Head(ref, remote.WithContext(ctx), remote.WithTransport(rt))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("HEAD %s: %w", ref, err)
	}
	return desc, nil
}

// index GETs an index by digest, advisory; remote checks that the bytes are the digest's.
func (r *Resolver) index(ctx context.Context, cfg *config, ref name.Digest, pod podCreds) (*v1.IndexManifest, error) {
	var idx *v1.IndexManifest
	err := r.read(ctx, cfg, ref, pod, true, func(ctx context.Context, rt http.RoundTripper) error {
		desc, err := remote.Get(ref, remote.WithContext(ctx), remote.WithTransport(rt))
		if err != nil {
			return err
		}
		idx, err = v1.ParseIndexManifest(bytes.NewReader(desc.Manifest))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", ref, err)
	}
	return idx, nil
}

// read runs one step on ref's registry as Warm does: the resolver's transports, credentials,
// sessions and the host's circuit breaker, no retry of its own. An advisory read respects an
// open breaker but does not move it: a comparison that times out behind a mirror's big copy
// (Zot serializes syncs) or waits on a sync it started (a HEAD by a digest Zot lacks) must not
// take the mirror out of pinning.
func (r *Resolver) read(ctx context.Context, cfg *config, ref name.Reference, pod podCreds, advisory bool, step func(context.Context, http.RoundTripper) error) error {
	host := ref.Context().RegistryStr()
	reg := cfg.registry(host)
	auth, identity, err := cfg.auth(ctx, reg, ref.Context(), pod)
	if err != nil {
		return fmt.Errorf("%w: credentials for %s: %w", ErrUnauthorized, host, err)
	}
	_, listed := cfg.registries[host]
	w := &warm{
		r: r, cfg: cfg, reg: reg, auth: auth, key: sessionKey(reg, ref.Context(), identity), listed: listed,
		repo: ref.Context(), br: r.breakers.get(host, r.label(host)), advisory: advisory,
	}
	return w.do(ctx, ref, step)
}
