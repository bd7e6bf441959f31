// Package resolve turns image tags into the digests they name, for pinning pod images.
//
// It is the only package of pullgate that talks to registries. A Resolver asks with HEAD
// (GET only when HEAD carries no digest) and returns the digest of what the tag names, the
// index for a multi-arch tag. Answers are cached per reference and credential identity in a
// bounded LRU with a TTL; "not found" is cached briefly; concurrent resolutions of one tag
// share one registry call. When a registry fails, an expired answer up to Options.MaxStale
// old is served and marked stale. Each registry has a circuit breaker, every call runs under
// the caller's deadline with at most one quick retry, and errors wrap one of ErrNotFound,
// ErrUnauthorized, ErrTimeout, ErrCircuitOpen, ErrRegistry or ErrForbiddenAddress (or
// context.Canceled).
//
// A request with alternates (the same image on its registry's further mirrors) is a failover
// (failover.go): its candidates are tried in order, each under its own registry settings and
// breakers, and the Resolution says which one served and why the others were passed over.
//
// Pod authors pick the registries of their images, so registries the options do not list are
// reached at public unicast addresses only, checked as each connection opens (after name
// resolution, for every redirect and token realm too), unless Options.AllowPrivateUnlisted.
// Listed registries may be private, and so may their token realms and redirect targets when
// those are their own host or listed too. A refusal is a policy decision: ErrForbiddenAddress,
// outcome "forbidden", never served stale, never a circuit-breaker failure.
//
// A registry listed as Insecure is spoken to over plain HTTP only; every other registry over
// verified HTTPS only, loopback and private addresses included (go-containerregistry would try
// both). The handshake with a registry, GET /v2/ and for token registries a bearer token, is
// kept for a few minutes per registry settings, repository and credential identity, so a cache
// miss usually costs the one HEAD it needs.
//
// Resolver also implements contract.Warmer (warm.go): it reads an image through a mirror as a
// node pulls it (index, the nodes' platforms' manifests, every config and layer to the end,
// hashed against its digest through one fixed buffer and discarded), on the same transports,
// sessions and circuit breakers, so that a pull-through mirror holds it before a node asks.
//
// With Options.DigestMismatch, a digest a mirror names for a tag is compared, in the background
// and once per mirror digest, with the upstream's (fidelity.go); a mismatch and its likely cause
// (conversion to OCI, a trimmed index) ride on the cached answer as contract.Resolution.Mismatch.
//
// Resolver implements contract.CachedResolver, the only package of pullgate it imports.
// Configuration is plain Options, which cmd/webhook builds from the policy; Configure
// swaps it on reload and keeps the cache.
//
// Metrics go to controller-runtime's registry: pullgate_resolve_duration_seconds,
// pullgate_resolve_cache_total, pullgate_registry_requests_total,
// pullgate_registry_circuit_open and pullgate_digest_mismatch_total, labelled by configured
// registry host (others as "other"), never by image.
package resolve
