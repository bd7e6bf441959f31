package resolve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Sentinels for errors.Is. Every error Resolve returns wraps exactly one of them or
// ErrForbiddenAddress, or context.Canceled when the caller gave up.
var (
	// ErrNotFound: the registry answered that the tag (or repository) does not exist.
	ErrNotFound = errors.New("image not found")
	// ErrUnauthorized: the registry refused the credentials, or demanded some and had none.
	ErrUnauthorized = errors.New("registry denied access")
	// ErrTimeout: the registry did not answer within the deadline. Also wraps
	// context.DeadlineExceeded when the caller's deadline was the one that ran out.
	ErrTimeout = errors.New("registry timed out")
	// ErrCircuitOpen: the registry failed repeatedly and is not contacted until a cooldown
	// has passed.
	ErrCircuitOpen = errors.New("registry circuit open")
	// ErrRegistry: any other failure: 5xx, 429, connection or TLS errors, an unusable answer.
	ErrRegistry = errors.New("registry error")
	// ErrForbiddenAddress: a connection the options do not allow was refused before it was
	// opened (see Options.AllowPrivateUnlisted and Options.Registries). A policy decision, not
	// a registry failure: never served stale, never counted by the circuit breaker.
	ErrForbiddenAddress = errors.New("forbidden address")
)

// ErrPending joins ErrTimeout when the caller's deadline passed but the lookup goes on in the
// background (Options.BackgroundTimeout) and will fill the cache: the first sight of a tag on a
// mirror that copies the whole image before it answers.
var ErrPending = errors.New("the lookup goes on in the background")

// errUnsupported marks an answer that arrived but cannot be pinned (schema 1, a digest that is
// not sha256). It is wrapped in ErrRegistry; it does not count against the circuit breaker
// because the registry is healthy.
var errUnsupported = errors.New("unsupported manifest")

// failure is the classified outcome of one registry interaction.
type failure struct {
	err   error // wraps one sentinel
	trips bool  // counts against the registry's circuit breaker
	retry bool  // worth one quick retry
	// unsent: the registry was not contacted (ErrForbiddenAddress), so the call says nothing
	// of its health, good or bad.
	unsent bool
}

// classify maps what go-containerregistry and net/http return onto the sentinels. ctx is the
// context the call ran under: once it is done, its error decides, whatever the transport made
// of it (a ping racing https and http joins its errors without Unwrap). listed is whether ref's
// registry is listed in the options, for the advice in a refusal.
func classify(ctx context.Context, ref name.Reference, listed bool, err error) failure {
	image := ref.String()
	host := ref.Context().RegistryStr()
	if cerr := ctx.Err(); cerr != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		if cerr == nil {
			cerr = err
		}
		if errors.Is(cerr, context.Canceled) {
			return failure{err: fmt.Errorf("resolve %s: %w", image, cerr)}
		}
		return failure{err: fmt.Errorf("resolve %s: %w: %s did not answer in time: %w", image, ErrTimeout, host, cerr), trips: true}
	}
	if aerr := (*addressError)(nil); errors.As(err, &aerr) {
		// Refused before anything was sent, whatever came before (a ping, a redirect).
		return failure{err: &forbidden{msg: fmt.Sprintf("resolve %s: %s: %s", image, ErrForbiddenAddress, forbiddenMessage(host, listed, aerr)), err: err}, unsent: true}
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		code := terr.StatusCode
		switch {
		case code == http.StatusNotFound || hasCode(terr, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode):
			return failure{err: fmt.Errorf("resolve %s: %w: %w", image, ErrNotFound, err)}
		case denied(terr):
			return failure{err: fmt.Errorf("resolve %s: %w: check the pull credentials for %s: %w", image, ErrUnauthorized, host, err)}
		case code == http.StatusTooManyRequests || hasCode(terr, transport.TooManyRequestsErrorCode):
			// Rate limited: the registry is up, so the breaker stays closed (a mirror that
			// rate-limits tag lookups may still serve digests to the fallback check).
			return failure{err: fmt.Errorf("resolve %s: %w: %s is rate limiting: %w", image, ErrRegistry, host, err), retry: true}
		case code >= 500:
			return failure{err: fmt.Errorf("resolve %s: %w: %s answered %d: %w", image, ErrRegistry, host, code, err), trips: true, retry: true}
		default:
			return failure{err: fmt.Errorf("resolve %s: %w: %s answered %d: %w", image, ErrRegistry, host, code, err)}
		}
	}
	if m := realmRefused.FindStringSubmatch(err.Error()); m != nil {
		// Not a registry answer (those are transport.Errors, above), so the text is
		// go-containerregistry's own.
		msg := fmt.Sprintf("resolve %s: %s: registry %s names a token realm at %s, a private IP address that is not its own host and port; such a realm is refused whatever the policy lists (use the registry's own host and port, or a host name)", image, ErrForbiddenAddress, host, m[1])
		return failure{err: &forbidden{msg: msg, err: err}, unsent: true}
	}
	if errors.Is(err, errUnsupported) {
		return failure{err: fmt.Errorf("resolve %s: %w: %w", image, ErrRegistry, err)}
	}
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		return failure{err: fmt.Errorf("resolve %s: %w: %s did not answer in time: %w", image, ErrTimeout, host, err), trips: true}
	}
	if certificateError(err) {
		return failure{err: fmt.Errorf("resolve %s: %w: TLS with %s failed, its certificate does not verify (a private CA belongs in the registry's CA bundle): %w", image, ErrRegistry, host, err), trips: true}
	}
	if strings.Contains(err.Error(), plainHTTPAnswer) {
		return failure{err: fmt.Errorf("resolve %s: %w: %s answered HTTPS with plain HTTP (a plain-HTTP registry must be configured insecure): %w", image, ErrRegistry, host, err), trips: true}
	}
	reset := errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
	return failure{err: fmt.Errorf("resolve %s: %w: cannot reach %s: %w", image, ErrRegistry, host, err), trips: true, retry: reset}
}

// denied tells a refusal of the credentials (or of their absence).
func denied(terr *transport.Error) bool {
	return terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden ||
		hasCode(terr, transport.UnauthorizedErrorCode, transport.DeniedErrorCode)
}

// realmRefused matches go-containerregistry's refusal, with no type of its own, of a token
// realm (or a redirect of the token request) at a loopback, private, link-local or unspecified
// IP literal other than the registry's own host:port. It is checked before any request to the
// realm, whatever the options; pullgate's own check (see route) covers the addresses names
// resolve to, and the other address classes.
var realmRefused = regexp.MustCompile(`realm host "([^"]*)" is a private or link-local address`)

// plainHTTPAnswer is net/http's error text, with no type of its own, for an HTTPS request that a
// plain-HTTP server answered.
const plainHTTPAnswer = "server gave HTTP response to HTTPS client"

// certificateError reports whether err is a failed verification of a server certificate.
func certificateError(err error) bool {
	var verr *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verr) || errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid)
}

func hasCode(terr *transport.Error, codes ...transport.ErrorCode) bool {
	for _, d := range terr.Errors {
		for _, c := range codes {
			if d.Code == c {
				return true
			}
		}
	}
	return false
}

// callerError is what a waiter returns when its own context ends before the shared call does.
func callerError(ctx context.Context, ref name.Reference) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("resolve %s: %w: %s did not answer before the deadline: %w", ref, ErrTimeout, ref.Context().RegistryStr(), err)
	}
	return fmt.Errorf("resolve %s: %w", ref, err)
}

// authorizationValue matches an HTTP Authorization value in text.
var authorizationValue = regexp.MustCompile(`(?i)\b(basic|bearer)\s+[a-z0-9._~+/-]{8,}=*`)

// redacted is a registry error whose text hides credentials. A registry, or a proxy in front of
// it, may quote the request back in its error body; go-containerregistry puts the body in the
// error, and the error text reaches every pod author in admission warnings. errors.Is and As
// still see the original chain.
type redacted struct {
	err     error
	secrets []string
}

func (r *redacted) Error() string {
	s := r.err.Error()
	for _, secret := range r.secrets {
		s = strings.ReplaceAll(s, secret, "[redacted]")
	}
	return authorizationValue.ReplaceAllString(s, "$1 [redacted]")
}

func (r *redacted) Unwrap() error { return r.err }

// redact wraps err so that its text shows neither the credentials auth holds (password, tokens,
// and the basic Authorization value built from them) nor any Authorization value, such as the
// bearer token go-containerregistry obtained with them.
func redact(err error, auth authn.Authenticator) error {
	var secrets []string
	if auth != nil && auth != authn.Anonymous {
		if c, aerr := auth.Authorization(); aerr == nil && c != nil {
			if c.Username != "" || c.Password != "" {
				secrets = append(secrets, base64.StdEncoding.EncodeToString([]byte(c.Username+":"+c.Password)))
			}
			for _, s := range []string{c.Auth, c.IdentityToken, c.RegistryToken, c.Password} {
				// A very short secret would blank out unrelated text; the pattern still hides
				// the Authorization value carrying it.
				if len(s) >= 6 {
					secrets = append(secrets, s)
				}
			}
		}
	}
	return &redacted{err: err, secrets: secrets}
}
