package mutate

import (
	"context"

	"github.com/google/go-containerregistry/pkg/name"
)

// Resolver turns a tag into the digest it names right now. The handler is the one caller; it
// resolves all images of a pod concurrently under one deadline taken from the policy.
//
// Implementations live in pkg/resolve; this package depends only on the interface so the
// mutation core stays free of network code.
type Resolver interface {
	Resolve(ctx context.Context, req ResolveRequest) (Resolution, error)
}

// CachedResolver is a Resolver that can answer some requests from memory at once, without
// blocking. The handler asks it first and starts resolution only for the rest: a warm
// admission then costs no goroutine, channel or timer.
type CachedResolver interface {
	Resolver
	// Cached returns the answer Resolve would give, when it has it without waiting.
	Cached(req ResolveRequest) (Outcome, bool)
}

// ResolveRequest names the image the node will pull. Ref is after the mirror rewrite; Upstream is
// the reference as the pod author wrote it (normalized), equal to Ref when no mirror applies. The
// resolver may consult Upstream only when the policy allows falling back to it.
type ResolveRequest struct {
	Ref      name.Tag
	Upstream name.Tag
	// Namespace and PullSecrets identify the pod's own pull credentials. They are set only when
	// the policy enables resolve.usePodPullSecrets; a resolver must then include them in its
	// cache key so that one tenant's private result is never served to another.
	Namespace   string
	PullSecrets []string
}

// Resolution is a resolved digest. Stale is set when the registry failed and the digest came
// from an expired cache entry (stale-if-error); the handler warns about it.
type Resolution struct {
	Digest string // "sha256:<hex>"
	Stale  bool
}
