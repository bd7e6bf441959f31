package policy

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// APIVersion and Kind identify a policy document.
const (
	APIVersion = "pullgate.dev/v1alpha1"
	Kind       = "Policy"
)

// ModeLabel is the namespace label that opts a namespace in and picks its mode.
const ModeLabel = "pullgate.dev/mode"

// Mode says whether pullgate changes pods or only reports what it would change.
type Mode string

// Modes.
const (
	// ModeEnforce changes pods.
	ModeEnforce Mode = "Enforce"
	// ModeAudit admits pods unchanged and reports, in warnings, annotations and metrics, what
	// it would have changed.
	ModeAudit Mode = "Audit"
)

// OnError says what happens to a pod whose image cannot be resolved to a digest.
type OnError string

const (
	// OnErrorKeep admits the pod with the tag unpinned and a warning.
	OnErrorKeep OnError = "Keep"
	// OnErrorDeny rejects the pod, naming the image and the cause.
	OnErrorDeny OnError = "Deny"
)

// Policy is the file an operator writes.
type Policy struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Mode       Mode   `json:"mode,omitempty"`
	// Mirrors maps upstream registries to the mirrors nodes pull from. A registry listed more
	// than once has its mirrors tried in the order listed (failover).
	Mirrors []Mirror `json:"mirrors,omitempty"`
	// Registries are registries pullgate talks to directly: those of images without a mirror,
	// and upstreams asked by fallbackToUpstream. Listing one gives its connection settings and
	// lets it be on a private address.
	Registries []Registry `json:"registries,omitempty"`
	Resolve    Resolve    `json:"resolve,omitempty"`
	// PullPolicy is set on every image that ends up pinned by digest. Empty leaves it alone.
	PullPolicy corev1.PullPolicy `json:"pullPolicy,omitempty"`
	// ImagePullSecrets are appended to every mutated pod, never replacing what it has.
	ImagePullSecrets []string `json:"imagePullSecrets,omitempty"`
	Exclude          Exclude  `json:"exclude,omitempty"`
	// Rules override mode, pull policy and pull secrets per namespace; the first match wins.
	Rules []Rule `json:"rules,omitempty"`
	// AllowPodOptOut lets a pod skip pullgate with the annotation pullgate.dev/skip: "true".
	AllowPodOptOut bool `json:"allowPodOptOut,omitempty"`
	// TenantOverrides lets namespace annotations narrow what the policy does (see tenant.go).
	// omitzero keeps a policy without it at the generation it had before the field existed.
	TenantOverrides TenantOverrides `json:"tenantOverrides,omitzero"`
	// Prepull lists node groups and the images pullgate keeps cached on them (see prepull.go).
	Prepull []Prepull `json:"prepull,omitempty"`
	// Warm has every mirror's default warm settings (see warm.go).
	Warm Warm `json:"warm,omitempty"`
	// Platforms are the platforms every pinned image must run on (see platforms.go).
	// omitzero keeps a policy without it at the generation it had before the field existed.
	Platforms Platforms `json:"platforms,omitzero"`
	// SyncCredentials are mirror credential Secrets the controller copies into every opted-in
	// namespace (see credentials.go).
	SyncCredentials []SyncCredential `json:"syncCredentials,omitempty"`
}

// Mirror is one upstream registry and a mirror that serves it. Entries with the same registry
// are tried in order, each with its own connection: an image goes to the first that serves
// its tag, and its digest is pinned against that one only.
type Mirror struct {
	// Registry is the upstream host[:port]; docker.io, index.docker.io and registry-1.docker.io
	// name the same registry.
	Registry string `json:"registry"`
	// Mirror is host[:port][/path-prefix]; the image's repository path is appended to it.
	Mirror     string `json:"mirror"`
	Connection `json:",inline"`
	// PreservesDigests declares that the mirror serves the upstream's manifests byte for byte
	// (Distribution; Zot with preserveDigest: true and compat: [docker2s2]): with
	// resolve.fallbackToUpstream, the upstream's digest is then pinned without asking the
	// mirror for it. Mirrors on one host share it.
	PreservesDigests bool `json:"preservesDigests,omitempty"`
	// Warm overrides the top-level warm settings for this mirror (see warm.go).
	Warm *Warm `json:"warm,omitempty"`
}

// Registry is a registry pullgate resolves against directly, with how to reach it.
type Registry struct {
	Host       string `json:"host"`
	Connection `json:",inline"`
}

// Connection is how pullgate reaches a registry host.
type Connection struct {
	// Insecure means plain HTTP only (loopback and development).
	Insecure bool `json:"insecure,omitempty"`
	// CABundle is PEM that the registry's certificate chains to, in addition to the system roots.
	CABundle string `json:"caBundle,omitempty"`
	// CAFile is a path to such a PEM bundle, read when the policy loads.
	CAFile string `json:"caFile,omitempty"`
	// CredentialsSecret names a kubernetes.io/dockerconfigjson Secret in pullgate's own namespace.
	CredentialsSecret string `json:"credentialsSecret,omitempty"`
	// CredentialsFile is a mounted docker config.json.
	CredentialsFile string `json:"credentialsFile,omitempty"`
}

// Resolve configures tag-to-digest resolution.
type Resolve struct {
	Enabled *bool `json:"enabled,omitempty"`
	// Timeout is the whole budget for one admission's resolutions.
	Timeout *metav1.Duration `json:"timeout,omitempty"`
	// CacheTTL is how long a resolved digest is trusted.
	CacheTTL *metav1.Duration `json:"cacheTTL,omitempty"`
	// CacheSize bounds the number of cached digests (least recently used go first).
	CacheSize *int `json:"cacheSize,omitempty"`
	// MaxStale is how long past its TTL a digest may still be used when the registry fails.
	MaxStale *metav1.Duration `json:"maxStale,omitempty"`
	OnError  OnError          `json:"onError,omitempty"`
	// FallbackToUpstream asks the upstream registry when the mirror fails, and pins the answer
	// only if the mirror serves that digest.
	FallbackToUpstream bool `json:"fallbackToUpstream,omitempty"`
	// DigestMismatch turns on comparing, in the background after a mirror resolution, the
	// mirror's digest for a tag with the upstream's, and says which one to pin when they differ:
	// Mirror (what the node pulls, with a warning) or Upstream (only when the mirror serves it
	// too; otherwise onError applies). Unset, it is Mirror with fallbackToUpstream and no
	// comparison without: pullgate asks an upstream only where the policy lets it. Not
	// defaulted into the policy, so that a policy without it keeps its generation.
	DigestMismatch DigestMismatch `json:"digestMismatch,omitempty"`
	// VerifyDigest checks, before pinning, that the mirror serves the digest it names for a tag:
	// one more request per cache miss, against a registry that answers tags with manifests it
	// no longer holds (pods pinned to them would fail to pull).
	VerifyDigest bool `json:"verifyDigest,omitempty"`
	// BackgroundTimeout is how long a lookup of a mirror or listed registry may go on after
	// the admission that started it was answered (unpinned, with a warning that says so), to
	// fill the cache for the next one: a mirror that copies a whole image before it answers
	// for its tag (Zot, Harbor) takes longer than Timeout on a big image's first sight.
	// 0 turns it off.
	BackgroundTimeout *metav1.Duration `json:"backgroundTimeout,omitempty"`
	// BackgroundLookups bounds such lookups per registry host.
	BackgroundLookups *int `json:"backgroundLookups,omitempty"`
	// UsePodPullSecrets authenticates resolution with the pod's own imagePullSecrets.
	UsePodPullSecrets bool `json:"usePodPullSecrets,omitempty"`
	// AllowPrivateUnlisted lets pullgate resolve images on registries that are neither a mirror
	// nor listed under registries when they are on private, loopback or link-local addresses.
	// Off by default: otherwise a pod author chooses which in-cluster address pullgate calls.
	AllowPrivateUnlisted bool `json:"allowPrivateUnlisted,omitempty"`
}

// DigestMismatch says which digest to pin when a mirror's differs from its upstream's.
type DigestMismatch string

// Digest mismatch handling.
const (
	PinMirrorDigest   DigestMismatch = "Mirror"
	PinUpstreamDigest DigestMismatch = "Upstream"
)

// Exclude lists what pullgate never touches.
type Exclude struct {
	// Namespaces are names or globs; pullgate's own namespace is always excluded.
	Namespaces []string `json:"namespaces,omitempty"`
	// Images are globs on the normalized reference (docker.io/library/nginx:1.27).
	Images []string `json:"images,omitempty"`
	// ImageRegexps are RE2 regular expressions that must match the whole normalized reference,
	// for what a glob cannot say (docker.io/library/postgres:1[67](\.[0-9]+)?).
	ImageRegexps []string `json:"imageRegexps,omitempty"`
	// Owners are owner kinds, "group/Kind" (postgresql.cnpg.io/Cluster), "group/*" (every kind
	// of the group) or "Kind" for the core group: a pod with an owner reference of one of them
	// is left alone. Operators that compare the image they wrote with the pod's (CloudNativePG
	// recreates such pods) need this. Only the pod's own owner references count, not their
	// owners': a Deployment's pods are owned by its ReplicaSet.
	Owners []string `json:"owners,omitempty"`
	// PodSelector leaves alone the pods whose labels it selects (a GitOps tool's or an
	// operator's label, e.g. cnpg.io/cluster).
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
}

// Rule overrides the top-level settings for the namespaces it selects.
type Rule struct {
	Name string `json:"name"`
	// Namespaces are names or globs. Exactly one of Namespaces and NamespaceSelector is set.
	Namespaces        []string              `json:"namespaces,omitempty"`
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	Mode              Mode                  `json:"mode,omitempty"`
	PullPolicy        corev1.PullPolicy     `json:"pullPolicy,omitempty"`
	// ImagePullSecrets, when set, replace the top-level list for these namespaces.
	ImagePullSecrets []string `json:"imagePullSecrets,omitempty"`
	// TenantOverrides, when set, replace the top-level ones for these namespaces (say, none for
	// production).
	TenantOverrides *TenantOverrides `json:"tenantOverrides,omitempty"`
}
