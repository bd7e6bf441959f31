package contract

import (
	"context"

	"github.com/google/go-containerregistry/pkg/name"
)

// Resolver turns a tag into the digest it names right now.
type Resolver interface {
	Resolve(ctx context.Context, req ResolveRequest) (Resolution, error)
}

// CachedResolver is a Resolver that can answer some requests from memory without blocking.
// The pod handler asks it first, so that a warm admission costs no goroutine, channel or timer.
type CachedResolver interface {
	Resolver
	// Cached returns the answer Resolve would give, when it has it without waiting.
	Cached(req ResolveRequest) (Outcome, bool)
}

// ResolveRequest names the image the node will pull. Ref is after the mirror rewrite; Upstream is
// the reference as the pod author wrote it (normalized), equal to Ref when no mirror applies. The
// resolver may consult Upstream only when the policy allows it: falling back to it, after every
// mirror, or comparing the mirror's digest with it.
type ResolveRequest struct {
	Ref name.Tag
	// Alternates are the same image on the registry's further mirrors, in the policy's order:
	// a resolver tries them, in turn, when the mirrors before fail or lack the tag, and says in
	// Resolution.Failover which one answered. Shared with the caller's memo: never modified.
	Alternates []name.Tag
	Upstream   name.Tag
	// Namespace and PullSecrets identify the pod's own pull credentials, set only when the
	// policy enables resolve.usePodPullSecrets. A resolver must include them in its cache key,
	// so that one tenant's private result is never served to another.
	Namespace   string
	PullSecrets []string
}

// Resolution is a resolved digest. Stale is set when the registry failed and the digest came
// from an expired cache entry (stale-if-error); the handler warns about it.
type Resolution struct {
	Digest string // "sha256:<hex>"
	Stale  bool
	// Failover is set when a candidate other than Ref served the digest. A pointer: warm
	// admissions carry one Resolution per image, and nearly all are served by Ref.
	Failover *Failover
	// Mismatch, when set, says the mirror's digest for the tag differs from the upstream's, as
	// a comparison made after an earlier resolution found; the handler warns about it. It may
	// come with an error, when the policy wants the upstream's digest and the mirror lacks it.
	Mismatch *DigestMismatch
}

// Failover says which of a request's candidates served its digest: the node must pull from that
// mirror, the only one the digest was checked against.
type Failover struct {
	Served int // see ResolveRequest.Candidate; at least 1
	// Skipped says why each candidate before Served was passed over, in order; empty for a
	// digest served from the cache alone (StaleResolver).
	Skipped []error
}

// Served is the candidate the digest is for: 0 for Ref, i for Alternates[i-1].
func (r Resolution) Served() int {
	if r.Failover == nil {
		return 0
	}
	return r.Failover.Served
}

// Candidate returns the i-th reference to try: Ref for 0, then the alternates.
func (r ResolveRequest) Candidate(i int) name.Tag {
	if i <= 0 || i > len(r.Alternates) {
		return r.Ref
	}
	return r.Alternates[i-1]
}

// Outcome is what the resolver said for one reference.
type Outcome struct {
	Resolution
	Err error
}

// StaleResolver answers, without asking a registry, with the last digest for a reference that
// stale-if-error still allows. The handler asks it for what is unanswered when the admission
// budget ends, so serving a known digest from a hung registry never depends on scheduling.
type StaleResolver interface {
	Stale(ResolveRequest) (Resolution, bool)
}
