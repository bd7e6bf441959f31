package contract

import (
	"context"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
)

// Warmer reads an image through a mirror the way a node pulls it, so that a pull-through
// mirror fetches it from upstream before any node asks. The controller's queue (pkg/warm)
// calls it; pkg/resolve implements it with the resolver's transports, credentials and breakers.
type Warmer interface {
	Warm(ctx context.Context, req WarmRequest) (WarmResult, error)
}

// Platform is an OS and architecture a cluster's nodes run ("linux", "amd64").
type Platform struct {
	OS, Architecture string
}

func (p Platform) String() string { return p.OS + "/" + p.Architecture }

// WarmRequest names one image on a mirror, by digest.
type WarmRequest struct {
	Ref name.Digest
	// Platforms select the manifests of an index to read; empty reads every platform. Entries
	// of an index without a platform or with "unknown" (attestations) are never read.
	Platforms []Platform
	// CheckOnly asks whether the mirror holds every blob (HEAD), fetching nothing: for
	// air-gapped clusters, where the mirror has no upstream to fill from.
	CheckOnly bool
	// Start, when set, is called once the manifests are read and before any blob is, with the
	// sum of the blob sizes and their count; an error stops the warm (a byte budget) and is
	// returned as it is.
	Start func(total int64, blobs int) error
	// Progress, when set, is called with every chunk of blob bytes read (for a no-progress
	// timeout and a byte budget). It must be cheap and safe for concurrent use.
	Progress func(n int64)
}

// WarmResult says what one warm read.
type WarmResult struct {
	Manifests int   // manifests and indexes read
	Blobs     int   // configs and layers read to the end (or found, with CheckOnly)
	Bytes     int64 // blob bytes read (CheckOnly: their total size)
	// Missing are the blobs the mirror does not hold (CheckOnly); Warm then also returns an
	// error with outcome WarmMissing.
	Missing []string
}

// Warm outcomes: the values of WarmError.Outcome, and metric labels.
const (
	WarmNotFound       = "not_found"       // the mirror does not have (or cannot get) a manifest or blob
	WarmUnauthorized   = "unauthorized"    // credentials refused
	WarmTimeout        = "timeout"         // no answer in time
	WarmCircuitOpen    = "circuit_open"    // the mirror's breaker is open
	WarmRateLimited    = "rate_limited"    // 429
	WarmServerError    = "server_error"    // 5xx, connection errors
	WarmDigestMismatch = "digest_mismatch" // the bytes served do not hash to their digest
	WarmMissing        = "missing"         // CheckOnly: blobs absent
	WarmForbidden      = "forbidden"       // the address is not allowed
	WarmCanceled       = "canceled"        // the caller's context ended
	WarmError          = "error"           // anything else
)

// WarmFailure is the error a Warmer returns: why, in a word, and whether trying again later
// may help.
type WarmFailure struct {
	Outcome string // one of the Warm* outcomes
	// Retry: the failure may be transient (429, 5xx, timeouts, an open breaker).
	Retry bool
	// RetryAfter is the registry's Retry-After, or when an open breaker lets calls through.
	RetryAfter time.Duration
	Err        error
}

func (f *WarmFailure) Error() string { return fmt.Sprintf("%s: %v", f.Outcome, f.Err) }
func (f *WarmFailure) Unwrap() error { return f.Err }
