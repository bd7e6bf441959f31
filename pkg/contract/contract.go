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
// resolver may consult Upstream only when the policy allows it: falling back to it, or comparing
// the mirror's digest with it.
type ResolveRequest struct {
	Ref      name.Tag
	Upstream name.Tag
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
	// Mismatch, when set, says the mirror's digest for the tag differs from the upstream's, as
	// a comparison made after an earlier resolution found; the handler warns about it. It may
	// come with an error, when the policy wants the upstream's digest and the mirror lacks it.
	Mismatch *DigestMismatch
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
