package contract

import "fmt"

// Likely causes of a digest mismatch, as the metric label and report results spell them.
const (
	// CauseConversion: the upstream serves a Docker v2 manifest or list, the mirror an OCI one
	// (Zot's default sync converts).
	CauseConversion = "conversion"
	// CauseTrimmedIndex: both serve an index, the mirror's with fewer entries or without the
	// upstream's attestation manifests (Zot without preserveDigest, Harbor).
	CauseTrimmedIndex = "trimmed-index"
	// CauseDiffers: neither; the mirror may hold an older or newer push of the tag.
	CauseDiffers = "differs"
)

// DigestMismatch says that a mirror names another digest for a tag than its upstream does.
// Signatures and attestations are keyed on the upstream's digest, so a pin to the mirror's
// fails their verification.
type DigestMismatch struct {
	Mirror         string // the mirror's host
	Upstream       string // the upstream reference, as ResolveRequest.Upstream names it
	MirrorDigest   string
	UpstreamDigest string
	Cause          string // one of the Cause constants
	// Declared: the policy says this mirror preserves digests, which is then wrong.
	Declared bool
	// PinnedUpstream: the resolution's digest is the upstream's, which the mirror also serves.
	PinnedUpstream bool
}

// String is the mismatch in one sentence for a pod author or an operator.
func (m *DigestMismatch) String() string {
	s := fmt.Sprintf("mirror %s serves %s for %s but upstream has %s (likely cause: %s)", m.Mirror, m.MirrorDigest, m.Upstream, m.UpstreamDigest, causeText(m.Cause))
	if m.Declared {
		s += "; the policy declares that this mirror preserves digests, which it does not here"
	}
	if m.PinnedUpstream {
		s += "; pinned the upstream's digest, which the mirror also serves"
	}
	return s
}

func causeText(cause string) string {
	switch cause {
	case CauseConversion:
		return "conversion to OCI"
	case CauseTrimmedIndex:
		return "a trimmed index, with fewer entries or no attestations"
	default:
		return "the mirror holds another push of the tag"
	}
}
