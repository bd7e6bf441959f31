package resolve

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/singleflight"
)

// A session is what one handshake with a registry buys: the ping's verdict on how to
// authenticate and, for token registries, a bearer token for pull access to one repository.
// Without reuse every cache miss pays GET /v2/ (and a token request) before its HEAD, two or
// three round trips where one would do.
const (
	// sessionTTL bounds the reuse of one handshake. go-containerregistry's bearer transport
	// fetches a new token by itself when the registry answers 401 with a challenge, and a
	// reused session that is refused gets one fresh handshake (see Resolver.authenticated);
	// the TTL is the backstop for whatever those miss, such as a registry whose
	// authentication was reconfigured. A token's expires_in shortens it.
	sessionTTL = 3 * time.Minute
	// sessionCap bounds the sessions kept. Repositories come from pod specs, so without it a
	// pod author could grow the map.
	sessionCap = 1024
	// pingBodyLimit is how much of a /v2/ answer is drained so that its connection is reused.
	pingBodyLimit = 64 << 10
)

// sessions caches what handshakes with registries found out. Safe for concurrent use.
type sessions struct {
	// rts are authenticated round trippers by registry settings, repository and credential
	// identity (see sessionKey).
	rts *ttlLRU[http.RoundTripper]
	// challenges are /v2/ answers by registry settings and host. The challenge does not depend
	// on the repository or the credentials, so a session for a new repository on a known
	// registry needs no ping: for a registry without tokens it costs no request at all.
	challenges *ttlLRU[*transport.Challenge]
	flights    singleflight.Group // one handshake per session key and one ping per host at a time
}

func newSessions() *sessions {
	return &sessions{rts: newTTLLRU[http.RoundTripper](sessionCap), challenges: newTTLLRU[*transport.Challenge](sessionCap)}
}

// sessionKey names a session: the registry's connection settings (sessionTag, which changes
// when a reload changes the registry's scheme or CA bundle), the repository (a bearer token is
// scoped to one), and the identity of the credentials. Sessions made under settings or
// credentials that a reload replaced are never looked up again; they age out.
func sessionKey(reg registry, repo name.Repository, identity string) string {
	return reg.sessionTag + "\x00" + repo.Name() + "\x00" + identity
}

// session returns a handshake's round tripper for key, doing the handshake if no other call is
// doing it already. The handshake is detached from the caller, like a flight: a caller that
// leaves does not cut it short for the others, and it fills the session cache.
func (r *Resolver) session(ctx context.Context, cfg *config, reg registry, auth authn.Authenticator, key string, repo name.Repository) (http.RoundTripper, error) {
	ch := r.sessions.flights.DoChan("session\x00"+key, func() (any, error) {
		// A caller that missed just before the previous handshake stored its session starts a
		// new one; it must not shake hands again.
		if rt, ok := r.sessions.rts.get(key); ok {
			return rt, nil
		}
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.timeout)
		defer cancel()
		rt, ttl, err := r.handshake(hctx, reg, auth, repo)
		if err != nil {
			return nil, err
		}
		r.sessions.rts.put(key, rt, ttl)
		return rt, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(http.RoundTripper), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// forget drops the session rt under key, and the challenge of its registry, so that the next
// call pings afresh: the registry refused the session or could not be reached through it.
func (s *sessions) forget(key string, rt http.RoundTripper, reg registry, repo name.Repository) {
	s.rts.drop(key, rt)
	s.challenges.remove(challengeKey(reg, repo.Registry))
}

func challengeKey(reg registry, host name.Registry) string {
	return reg.sessionTag + "\x00" + host.RegistryStr()
}

// handshake does what go-containerregistry's transport.NewWithContext does (GET /v2/, then a
// token for a bearer challenge), reusing an earlier /v2/ answer, but in the one scheme the
// configuration allows: NewWithContext also tries the other, which costs an insecure registry a
// failed HTTPS request per handshake and turns a secure one's certificate error into a
// misleading "400". The transport.Wrapper it returns keeps remote from adding retries; it comes
// with how long it may be reused.
func (r *Resolver) handshake(ctx context.Context, reg registry, auth authn.Authenticator, repo name.Repository) (http.RoundTripper, time.Duration, error) {
	host := repo.RegistryStr()
	// Every request of the session, token realm and redirects included, goes through route,
	// which holds hosts the policy does not list to public addresses.
	scheme, rt := "http", http.RoundTripper(&route{r: r, registry: hostKey(host), open: reg.transport, guarded: reg.guarded})
	if !reg.insecure {
		scheme, rt = "https", &httpsOnly{host: host, inner: rt}
	}
	rt = transport.NewUserAgent(retryAfterNoter{inner: rt}, "")

	ckey := challengeKey(reg, repo.Registry)
	ch, ok := r.sessions.challenges.get(ckey)
	if !ok {
		// Joined, not detached: every handshake waiting here is itself detached and bounded.
		v, err, _ := r.sessions.flights.Do("ping\x00"+ckey, func() (any, error) {
			if ch, ok := r.sessions.challenges.get(ckey); ok {
				return ch, nil // stored by a ping that ended since the lookup above
			}
			ch, err := ping(ctx, rt, scheme, host, reg.insecure)
			if err != nil {
				return nil, err
			}
			r.sessions.challenges.put(ckey, ch, sessionTTL)
			return ch, nil
		})
		if err != nil {
			return nil, 0, err
		}
		ch = v.(*transport.Challenge)
	}
	tr, ttl, err := authenticate(ctx, repo, auth, rt, ch)
	if err != nil {
		r.sessions.challenges.drop(ckey, ch) // the realm may have moved
		return nil, 0, err
	}
	return tr, ttl, nil
}

// authenticate builds the round tripper for a challenge.
func authenticate(ctx context.Context, repo name.Repository, auth authn.Authenticator, rt http.RoundTripper, ch *transport.Challenge) (http.RoundTripper, time.Duration, error) {
	if !strings.EqualFold(ch.Scheme, "bearer") {
		// No challenge, or basic (or one we do not know): credentials, if any, go with every
		// request, as go-containerregistry does.
		tr, err := transport.FromToken(repo.Registry, auth, rt, ch, &transport.Token{})
		return tr, sessionTTL, err
	}
	tok, err := bearerToken(ctx, repo, auth, rt, ch)
	if err != nil {
		return nil, 0, err
	}
	ttl := sessionTTL
	if tok.ExpiresIn > 0 {
		// Renew before the registry starts refusing the token, rather than after.
		ttl = min(ttl, time.Duration(tok.ExpiresIn)*time.Second*9/10)
	}
	// The bearer transport sends tok and, on a 401 with a challenge, fetches a new token for
	// the scopes the challenge names, with auth.
	tr, err := transport.FromToken(repo.Registry, auth, rt, ch, tok)
	return tr, ttl, err
}

// bearerToken gets a token for pull access to repo, the way transport.NewWithContext seeds its
// bearer transport: a registry token in the credentials is used as it is, anything else is
// exchanged at the challenge's realm.
func bearerToken(ctx context.Context, repo name.Repository, auth authn.Authenticator, rt http.RoundTripper, ch *transport.Challenge) (*transport.Token, error) {
	cfg, err := authn.Authorization(ctx, auth)
	if err != nil {
		return nil, err
	}
	if cfg.RegistryToken != "" {
		return &transport.Token{Token: cfg.RegistryToken}, nil
	}
	tok, err := transport.Exchange(ctx, repo.Registry, auth, rt, []string{repo.Scope(transport.PullScope)}, ch)
	if err != nil {
		return nil, err
	}
	if tok.Token == "" {
		tok.Token = tok.AccessToken // some token servers answer with access_token only
	}
	return tok, nil
}

// ping asks GET /v2/ how to authenticate, over scheme only.
func ping(ctx context.Context, rt http.RoundTripper, scheme, host string, insecure bool) (*transport.Challenge, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+host+"/v2/", nil)
	if err != nil {
		return nil, err
	}
	client := http.Client{Transport: rt, CheckRedirect: checkRedirect(insecure)}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() {
		// Drained, the connection goes back to the pool for the HEAD that follows.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, pingBodyLimit))
		_ = resp.Body.Close()
	}()
	switch resp.StatusCode {
	case http.StatusOK:
		return &transport.Challenge{Insecure: insecure}, nil
	case http.StatusUnauthorized:
		return pickChallenge(resp.Header.Values("WWW-Authenticate"), insecure), nil
	default:
		return nil, transport.CheckError(resp, http.StatusOK, http.StatusUnauthorized)
	}
}

// checkRedirect follows at most 10 redirects, and none from HTTPS to plain HTTP unless the
// registry is insecure.
func checkRedirect(insecure bool) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		if !insecure && req.URL.Scheme != "https" {
			return fmt.Errorf("refusing a redirect to plain HTTP (%s) for a registry that is not insecure", req.URL.Redacted())
		}
		return nil
	}
}

// httpsOnly sends requests for a registry that is not configured insecure over HTTPS.
// go-containerregistry builds registry URLs with name.Registry.Scheme(), which says "http" for
// loopback, RFC 1918 and .local names even without name.Insecure, and leaves the choice to the
// scheme its ping settled on; pullgate settles it by configuration instead, so a plain-HTTP URL
// for this registry's host is upgraded here. Nothing is ever downgraded, and other hosts (a
// token realm) are left alone: go-containerregistry itself refuses a plain-HTTP realm for a
// registry that is not insecure.
type httpsOnly struct {
	host  string
	inner http.RoundTripper
}

func (h *httpsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" || req.URL.Host != h.host {
		return h.inner.RoundTrip(req)
	}
	out := req.Clone(req.Context()) // a RoundTripper must not change the request it is given
	out.URL.Scheme = "https"
	return h.inner.RoundTrip(out)
}

// sessionTag identifies the connection settings of a registry for session keys.
func sessionTag(insecure bool, bundle []byte) string {
	sum := sha256.Sum256(bundle)
	scheme := "https"
	if insecure {
		scheme = "http"
	}
	return scheme + ":" + hex.EncodeToString(sum[:])
}
