package resolve_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pullgate/pullgate/pkg/resolve"
)

// expectRequests resolves repoTag and checks exactly which requests reached the registry.
func expectRequests(t *testing.T, r *resolve.Resolver, reg *testRegistry, repoTag string, want map[string]int) {
	t.Helper()
	reg.requestCounts() // start from zero
	if _, err := r.Resolve(context.Background(), request(reg.ref(t, repoTag))); err != nil {
		t.Fatalf("Resolve(%s): %v", repoTag, err)
	}
	if got := reg.requestCounts(); !maps.Equal(got, want) {
		t.Errorf("Resolve(%s) sent %v, want %v", repoTag, got, want)
	}
}

// A miss on a warm session costs exactly one request, the HEAD: the ping is done once per
// registry, for plain HTTP and for TLS alike.
func TestSessionReuse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts []func(*testRegistry, *httptest.Server)
	}{
		{"insecure", nil},
		{"tls", []func(*testRegistry, *httptest.Server){withTLS}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reg := newRegistry(t, tc.opts...)
			for _, rt := range []string{"app:v1", "app:v2", "other:v1"} {
				reg.push(t, rt)
			}
			c := newClock()
			r := newResolver(t, c, resolve.Options{CacheTTL: time.Minute}, reg)
			tlsBefore, plainBefore := reg.tlsConns.Load(), reg.plainConns.Load()

			expectRequests(t, r, reg, "app:v1", map[string]int{"GET /v2/": 1, "HEAD /v2/app/manifests/v1": 1})
			expectRequests(t, r, reg, "app:v2", map[string]int{"HEAD /v2/app/manifests/v2": 1})
			// Another repository: a registry without tokens needs no new handshake at all.
			expectRequests(t, r, reg, "other:v1", map[string]int{"HEAD /v2/other/manifests/v1": 1})
			c.Advance(2 * time.Minute) // the digests expire; the session does not (real time)
			expectRequests(t, r, reg, "app:v1", map[string]int{"HEAD /v2/app/manifests/v1": 1})

			// Not one connection in the other scheme.
			if tc.name == "insecure" && reg.tlsConns.Load() != tlsBefore {
				t.Errorf("%d HTTPS connections to a registry configured insecure", reg.tlsConns.Load()-tlsBefore)
			}
			if tc.name == "tls" && reg.plainConns.Load() != plainBefore {
				t.Errorf("%d plain-HTTP connections to a TLS registry", reg.plainConns.Load()-plainBefore)
			}
		})
	}
}

// The session lives a few minutes of real time: past that, a miss shakes hands again.
func TestSessionExpires(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	reg.push(t, "app:v1")
	reg.push(t, "app:v2")
	r := newResolver(t, newClock(), resolve.Options{}, reg)
	sc := newClock()
	resolve.SetSessionClock(r, sc.Now)

	expectRequests(t, r, reg, "app:v1", map[string]int{"GET /v2/": 1, "HEAD /v2/app/manifests/v1": 1})
	sc.Advance(3*time.Minute + time.Second)
	expectRequests(t, r, reg, "app:v2", map[string]int{"GET /v2/": 1, "HEAD /v2/app/manifests/v2": 1})
}

// tokenGate is a bearer-token registry in front of go-containerregistry's: /token issues tokens
// for the scopes asked, to the right basic credentials; every /v2/ request needs a token, and a
// manifest request one with pull scope on its repository.
type tokenGate struct {
	host, user, pass string
	expiresIn        int  // the token answer's expires_in
	scopeInChallenge bool // 401 answers name the scope needed, as Distribution and Docker Hub do

	mu     sync.Mutex
	valid  map[string][]string // token -> scopes
	issued int
}

func (g *tokenGate) fault(w http.ResponseWriter, r *http.Request) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if r.URL.Path == "/token" {
		if u, p, ok := r.BasicAuth(); !ok || u != g.user || p != g.pass {
			w.WriteHeader(http.StatusUnauthorized)
			return true
		}
		g.issued++
		tok := fmt.Sprintf("token-%d-of-the-gate", g.issued)
		g.valid[tok] = r.URL.Query()["scope"]
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_in": g.expiresIn})
		return true
	}
	need := ""
	if repo, _, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/manifests/"); ok {
		need = "repository:" + repo + ":pull"
	}
	scopes, ok := g.valid[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
	if ok && (need == "" || strings.Contains(strings.Join(scopes, " "), need)) {
		return false // the registry answers
	}
	challenge := fmt.Sprintf(`Bearer realm="http://%s/token",service="gate"`, g.host)
	if need != "" && g.scopeInChallenge {
		challenge += fmt.Sprintf(`,scope=%q`, need)
	}
	w.Header().Set("WWW-Authenticate", challenge)
	w.WriteHeader(http.StatusUnauthorized)
	return true
}

// revoke makes every token issued so far invalid, as expiry or a revocation does.
func (g *tokenGate) revoke() {
	g.mu.Lock()
	defer g.mu.Unlock()
	clear(g.valid)
}

func newTokenGate(t *testing.T, reg *testRegistry, scopeInChallenge bool) *tokenGate {
	t.Helper()
	g := &tokenGate{host: reg.host, user: "robot", pass: "robot-pass-1234", expiresIn: 300, scopeInChallenge: scopeInChallenge, valid: map[string][]string{}}
	reg.setFault(g.fault)
	return g
}

// A token registry: the token is fetched once per repository and reused; when the registry
// starts refusing it, a new one is fetched and the resolution succeeds, whether or not the
// refusal names the scope go-containerregistry needs to renew the token by itself.
func TestSessionBearerToken(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name             string
		scopeInChallenge bool
		afterRevoke      map[string]int
	}{
		// go-containerregistry's bearer transport renews the token and repeats the HEAD.
		{"challenge names the scope", true, map[string]int{"HEAD /v2/app/manifests/v1": 2, "GET /token": 1}},
		// It renews it without the scope, the registry refuses again, and the resolver drops
		// the session and shakes hands afresh.
		{"challenge without scope", false, map[string]int{"HEAD /v2/app/manifests/v1": 3, "GET /token": 2, "GET /v2/": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reg := newRegistry(t)
			for _, rt := range []string{"app:v1", "app:v2", "other:v1"} {
				reg.push(t, rt)
			}
			gate := newTokenGate(t, reg, tc.scopeInChallenge)
			c := newClock()
			r := newResolver(t, c, resolve.Options{CacheTTL: time.Minute, Registries: map[string]resolve.Registry{
				reg.host: {Insecure: true, Auth: basicAuth(gate.user, gate.pass), CredentialID: "robot@1"},
			}})

			expectRequests(t, r, reg, "app:v1", map[string]int{"GET /v2/": 1, "GET /token": 1, "HEAD /v2/app/manifests/v1": 1})
			expectRequests(t, r, reg, "app:v2", map[string]int{"HEAD /v2/app/manifests/v2": 1})
			// Another repository needs its own token, not another ping.
			expectRequests(t, r, reg, "other:v1", map[string]int{"GET /token": 1, "HEAD /v2/other/manifests/v1": 1})

			gate.revoke()
			c.Advance(2 * time.Minute)
			expectRequests(t, r, reg, "app:v1", tc.afterRevoke)
			// And the new token is reused in turn.
			expectRequests(t, r, reg, "app:v2", map[string]int{"HEAD /v2/app/manifests/v2": 1})
		})
	}
}

// A token's expires_in bounds the session: the token is renewed before the registry refuses
// it. The ping's answer is still good.
func TestSessionTokenExpiresIn(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	reg.push(t, "app:v1")
	reg.push(t, "app:v2")
	gate := newTokenGate(t, reg, true)
	gate.expiresIn = 60
	r := newResolver(t, newClock(), resolve.Options{Registries: map[string]resolve.Registry{
		reg.host: {Insecure: true, Auth: basicAuth(gate.user, gate.pass), CredentialID: "robot@1"},
	}})
	sc := newClock()
	resolve.SetSessionClock(r, sc.Now)

	expectRequests(t, r, reg, "app:v1", map[string]int{"GET /v2/": 1, "GET /token": 1, "HEAD /v2/app/manifests/v1": 1})
	sc.Advance(55 * time.Second) // past 90% of the token's minute
	expectRequests(t, r, reg, "app:v2", map[string]int{"GET /token": 1, "HEAD /v2/app/manifests/v2": 1})
}

// Concurrent misses on one repository share one handshake: one ping, one token.
func TestSessionSharedHandshake(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	const n = 20
	for i := range n {
		reg.push(t, fmt.Sprintf("app:v%d", i))
	}
	gate := newTokenGate(t, reg, true)
	r := newResolver(t, newClock(), resolve.Options{Registries: map[string]resolve.Registry{
		reg.host: {Insecure: true, Auth: basicAuth(gate.user, gate.pass), CredentialID: "robot@1"},
	}})
	reg.requestCounts()
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			if _, err := r.Resolve(context.Background(), request(reg.ref(t, fmt.Sprintf("app:v%d", i)))); err != nil {
				t.Error(err)
			}
		})
	}
	close(start)
	wg.Wait()
	got := reg.requestCounts()
	if got["GET /v2/"] != 1 || got["GET /token"] != 1 {
		t.Errorf("%d concurrent misses sent %d pings and %d token requests, want 1 and 1 (all: %v)", n, got["GET /v2/"], got["GET /token"], got)
	}
}

// A reload keeps the sessions of registries whose settings did not change, and a new credential
// identity gets a new token.
func TestSessionConfigure(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	for _, rt := range []string{"app:v1", "app:v2", "app:v3", "app:v4"} {
		reg.push(t, rt)
	}
	gate := newTokenGate(t, reg, true)
	opts := func(id string) resolve.Options {
		return resolve.Options{Registries: map[string]resolve.Registry{
			reg.host: {Insecure: true, Auth: basicAuth(gate.user, gate.pass), CredentialID: id},
		}}
	}
	r := newResolver(t, newClock(), opts("robot@1"))
	expectRequests(t, r, reg, "app:v1", map[string]int{"GET /v2/": 1, "GET /token": 1, "HEAD /v2/app/manifests/v1": 1})

	if err := r.Configure(opts("robot@1")); err != nil {
		t.Fatal(err)
	}
	expectRequests(t, r, reg, "app:v2", map[string]int{"HEAD /v2/app/manifests/v2": 1})

	if err := r.Configure(opts("robot@2")); err != nil { // the secret changed
		t.Fatal(err)
	}
	expectRequests(t, r, reg, "app:v3", map[string]int{"GET /token": 1, "HEAD /v2/app/manifests/v3": 1})

	// Credentials without an identity cannot be compared: they get a new session every reload.
	noID := resolve.Options{Registries: map[string]resolve.Registry{reg.host: {Insecure: true, Auth: basicAuth(gate.user, gate.pass)}}}
	if err := r.Configure(noID); err != nil {
		t.Fatal(err)
	}
	expectRequests(t, r, reg, "app:v4", map[string]int{"GET /token": 1, "HEAD /v2/app/manifests/v4": 1})
	if err := r.Configure(noID); err != nil {
		t.Fatal(err)
	}
	expectRequests(t, r, reg, "app:v1", map[string]int{"GET /token": 1, "HEAD /v2/app/manifests/v1": 1})
}

// An insecure registry is spoken to over plain HTTP only: no HTTPS attempt, so no
// code="error" request in the metrics after healthy lookups, and nothing about HTTPS in the
// errors or log lines when it fails.
func TestInsecureRegistryPlainHTTPOnly(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	for _, rt := range []string{"app:v1", "app:v2", "other:v1"} {
		reg.push(t, rt)
	}
	tlsBefore := reg.tlsConns.Load()
	// Counted from here: a registry of an earlier test may have had this port.
	before := map[string]float64{}
	requests := func(method, code string) float64 {
		n := gauge(t, "pullgate_registry_requests_total", prometheus.Labels{"registry": reg.host, "method": method, "code": code})
		if b, ok := before[method+code]; ok {
			return n - b
		}
		before[method+code] = n
		return 0
	}
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		requests(m, "error")
		requests(m, "200")
	}

	r := newResolver(t, newClock(), resolve.Options{BreakerFailures: 1000}, reg)
	for _, rt := range []string{"app:v1", "app:v2", "other:v1"} {
		if _, err := r.Resolve(context.Background(), request(reg.ref(t, rt))); err != nil {
			t.Fatal(err)
		}
	}
	if n := reg.tlsConns.Load() - tlsBefore; n != 0 {
		t.Errorf("%d HTTPS connections to a registry configured insecure", n)
	}
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		if n := requests(m, "error"); n != 0 {
			t.Errorf(`pullgate_registry_requests_total{method=%q,code="error"} = %v after healthy lookups, want 0`, m, n)
		}
	}
	if ping, head := requests(http.MethodGet, "200"), requests(http.MethodHead, "200"); ping != 1 || head != 3 {
		t.Errorf("counted %v pings and %v HEADs, want 1 and 3", ping, head)
	}

	// The registry fails: the warnings that reach pod authors, and the log, say what happened
	// over HTTP. Both the ping (a new resolver) and the HEAD (a warm one) fail.
	reg.setFault(func(w http.ResponseWriter, _ *http.Request) bool {
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	})
	cold := newResolver(t, newClock(), resolve.Options{BreakerFailures: 1}, reg)
	for name, res := range map[string]*resolve.Resolver{"cold": cold, "warm": r} {
		var logs logBuffer
		ctx := logr.NewContext(context.Background(), logs.logger())
		_, err := res.Resolve(ctx, request(reg.ref(t, "app:v3")))
		if !errors.Is(err, resolve.ErrRegistry) || !strings.Contains(err.Error(), "503") {
			t.Fatalf("%s: err = %v, want ErrRegistry naming the 503", name, err)
		}
		for where, text := range map[string]string{"error": err.Error(), "log": logs.String()} {
			if strings.Contains(strings.ToLower(text), "https") {
				t.Errorf("%s: %s mentions https for an insecure registry: %s", name, where, text)
			}
		}
	}
	if n := reg.tlsConns.Load() - tlsBefore; n != 0 {
		t.Errorf("%d HTTPS connections to a registry configured insecure", n)
	}
}

// A registry that is not configured insecure is spoken to over HTTPS only, even on 127.0.0.1
// where go-containerregistry would fall back to plain HTTP: an untrusted certificate is
// reported as such (not as the HTTPS server's 400 answer to plain HTTP) and counts toward the
// circuit breaker, and so does a plain-HTTP registry that should have been configured insecure.
func TestSecureRegistryHTTPSOnly(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		tls      bool
		listed   bool
		wantText string
	}{
		{"untrusted certificate", true, true, "certificate"},
		{"untrusted certificate, unlisted host", true, false, "certificate"},
		{"plain HTTP, not insecure", false, true, "configured insecure"},
		{"plain HTTP, unlisted host", false, false, "configured insecure"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var reg *testRegistry
			if tt.tls {
				reg = newRegistry(t, withTLS)
			} else {
				reg = newRegistry(t)
			}
			reg.push(t, "app:v1")
			opts := resolve.Options{BreakerFailures: 2, BreakerCooldown: time.Hour, Registries: map[string]resolve.Registry{}}
			if tt.listed {
				opts.Registries[reg.host] = resolve.Registry{} // system roots, not insecure
			} else {
				opts.AllowPrivateUnlisted = true // loopback, unlisted: reachable only with this
			}
			r := newResolver(t, newClock(), opts)
			tlsBefore, plainBefore := reg.tlsConns.Load(), reg.plainConns.Load()

			for i := range 2 {
				_, err := r.Resolve(context.Background(), request(reg.ref(t, "app:v1")))
				if !errors.Is(err, resolve.ErrRegistry) || !strings.Contains(err.Error(), tt.wantText) || strings.Contains(err.Error(), "answered 400") {
					t.Fatalf("call %d: err = %v, want ErrRegistry saying %q", i, err, tt.wantText)
				}
			}
			if _, err := r.Resolve(context.Background(), request(reg.ref(t, "app:v1"))); !errors.Is(err, resolve.ErrCircuitOpen) {
				t.Errorf("after 2 failures: err = %v, want ErrCircuitOpen", err)
			}
			if tt.tls {
				if n := reg.plainConns.Load() - plainBefore; n != 0 {
					t.Errorf("%d plain-HTTP connections to a registry not configured insecure", n)
				}
			} else if n := reg.tlsConns.Load() - tlsBefore; n != 2 {
				t.Errorf("%d HTTPS connections, want 2 (one per call, no retry, no plain HTTP)", n)
			}
			if got := reg.requestCounts(); len(got) != 0 {
				t.Errorf("requests reached the registry's handler: %v", got)
			}
		})
	}
}
