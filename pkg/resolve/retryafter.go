package resolve

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// retryAfter carries a registry's Retry-After beside its error.
type retryAfter struct {
	err   error
	after time.Duration
}

func (r *retryAfter) Error() string { return r.err.Error() }
func (r *retryAfter) Unwrap() error { return r.err }

// waitNoteKey marks a warm step's context with the waitNote its requests write to:
// remote.Get's errors do not carry the answer's headers, and a registry that rate-limits
// manifests, or a handshake's GET /v2/, says how long to wait there.
type waitNoteKey struct{}

// waitNote keeps the last Retry-After answered within one warm step.
type waitNote struct{ after atomic.Pointer[time.Duration] }

func (n *waitNote) get() (time.Duration, bool) {
	if d := n.after.Load(); d != nil {
		return *d, true
	}
	return 0, false
}

// retryAfterNoter is a session's round tripper for warming: it notes the Retry-After of a 429
// or 503 in the request's waitNote, when the context carries one (resolving's does not).
type retryAfterNoter struct{ inner http.RoundTripper }

func (t retryAfterNoter) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.inner.RoundTrip(req)
	if err != nil || (resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable) {
		return resp, err
	}
	if note, ok := req.Context().Value(waitNoteKey{}).(*waitNote); ok {
		if d, ok := parseRetryAfter(resp.Header.Get("Retry-After")); ok {
			note.after.Store(&d)
		}
	}
	return resp, nil
}

// parseRetryAfter reads a Retry-After value: seconds or an HTTP date.
func parseRetryAfter(v string) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, time.Until(t)), true
	}
	return 0, false
}
