package resolve_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pullgate/pullgate/pkg/resolve"
)

// newGuarded makes a Resolver on the clock whose guarded connections use check (nil: the real
// classification) and which trusts the TLS test registries given, listed or not. Unlike
// newResolver it lists nothing by itself.
func newGuarded(t testing.TB, c *clock, opts resolve.Options, check func(netip.AddrPort) string, trusted ...*testRegistry) *resolve.Resolver {
	t.Helper()
	opts.Now = c.Now
	pool := x509.NewCertPool()
	for _, tr := range trusted {
		if tr.srv.TLS != nil {
			pool.AddCert(tr.srv.Certificate())
		}
	}
	r, err := resolve.NewForTest(opts, check, pool)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// publicPorts is an address check under which loopback addresses on the ports of regs play
// public ones; every other address is judged as in production.
func publicPorts(regs ...*testRegistry) func(netip.AddrPort) string {
	ports := map[uint16]bool{}
	for _, tr := range regs {
		ports[netip.MustParseAddrPort(tr.host).Port()] = true
	}
	return func(ap netip.AddrPort) string {
		if ap.Addr().Unmap().IsLoopback() && ports[ap.Port()] {
			return ""
		}
		return resolve.AddressClass(ap.Addr())
	}
}

func portOf(tr *testRegistry) string {
	_, port, err := net.SplitHostPort(tr.host)
	if err != nil {
		panic(err)
	}
	return port
}

// connections counts the connections a registry accepted, TLS or not.
func (tr *testRegistry) connections() int64 { return tr.tlsConns.Load() + tr.plainConns.Load() }

// An image on a registry the policy does not list, at a loopback address however it is spelled,
// is refused with ErrForbiddenAddress before a connection is opened: the registry sees nothing.
// The refusal is a policy decision: it does not open the circuit (BreakerFailures is 1), and it
// is counted as outcome "forbidden". Listed, the same registry resolves.
func TestUnlistedPrivateRegistry(t *testing.T) {
	t.Parallel()
	forbiddenBefore := gauge(t, "pullgate_resolve_duration_seconds", prometheus.Labels{"registry": "other", "outcome": "forbidden"})
	refusedBefore := gauge(t, "pullgate_registry_requests_total", prometheus.Labels{"registry": "other", "method": http.MethodGet, "code": "forbidden"})

	tests := []struct {
		name  string
		opts  []func(*testRegistry, *httptest.Server)
		host  func(tr *testRegistry) string // the image's registry, reaching tr
		class string
	}{
		{"IPv4 loopback", nil, func(tr *testRegistry) string { return tr.host }, "a loopback address"},
		{"IPv4 loopback, TLS", []func(*testRegistry, *httptest.Server){withTLS}, func(tr *testRegistry) string { return tr.host }, "a loopback address"},
		// Checked after name resolution: a name is no way around it, and neither is DNS rebinding.
		{"name resolving to loopback", nil, func(tr *testRegistry) string { return "localhost:" + portOf(tr) }, "a loopback address"},
		{"IPv4-mapped IPv6", nil, func(tr *testRegistry) string { return "[::ffff:127.0.0.1]:" + portOf(tr) }, "a loopback address"},
		{"IPv4-mapped IPv6, hex", []func(*testRegistry, *httptest.Server){withTLS}, func(tr *testRegistry) string { return "[::ffff:7f00:1]:" + portOf(tr) }, "a loopback address"},
		{"unspecified", nil, func(tr *testRegistry) string { return "0.0.0.0:" + portOf(tr) }, "the unspecified address"},
		{"IPv6 loopback", []func(*testRegistry, *httptest.Server){onIPv6Loopback(t)}, func(tr *testRegistry) string { return tr.host }, "a loopback address"},
	}
	var refused atomic.Int64 // calls refused, for the metrics
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := newRegistry(t, tt.opts...)
			want := reg.push(t, "app:v1")
			host := tt.host(reg)
			ref := (&testRegistry{host: host}).ref(t, "app:v1")
			c := newClock()
			r := newGuarded(t, c, resolve.Options{BreakerFailures: 1}, nil, reg)
			connsBefore := reg.connections()
			reg.requestCounts()

			for i := range 3 {
				_, err := r.Resolve(context.Background(), request(ref))
				if !errors.Is(err, resolve.ErrForbiddenAddress) {
					t.Fatalf("call %d: err = %v, want ErrForbiddenAddress", i, err)
				}
				for _, other := range []error{resolve.ErrRegistry, resolve.ErrCircuitOpen, resolve.ErrTimeout, resolve.ErrNotFound, resolve.ErrUnauthorized} {
					if errors.Is(err, other) {
						t.Errorf("call %d: err = %v also wraps %v", i, err, other)
					}
				}
				wantMsg := fmt.Sprintf("resolve %s: forbidden address: registry %s resolves to %s; list it in the policy to resolve against it", ref, host, tt.class)
				if err.Error() != wantMsg {
					t.Errorf("call %d: error\n  %s\nwant\n  %s", i, err, wantMsg)
				}
				refused.Add(1)
			}
			if n := reg.connections() - connsBefore; n != 0 {
				t.Errorf("%d connections reached the registry", n)
			}
			if got := reg.requestCounts(); len(got) != 0 {
				t.Errorf("requests reached the registry: %v", got)
			}

			// Listed, it resolves: and the refusals above did not open its circuit.
			if err := r.Configure(resolve.Options{Now: c.Now, BreakerFailures: 1, Registries: map[string]resolve.Registry{
				host: {Insecure: reg.srv.TLS == nil, CABundle: reg.caBundle()},
			}}); err != nil {
				t.Fatal(err)
			}
			if got, err := r.Resolve(context.Background(), request(ref)); err != nil || got.Digest != want {
				t.Errorf("listed: Resolve = %+v, %v; want %s", got, err, want)
			}
		})
	}
	t.Cleanup(func() {
		// Each call refused had its ping refused. Other tests running alongside share the
		// series: they can only have grown.
		n := float64(refused.Load())
		if got := gauge(t, "pullgate_resolve_duration_seconds", prometheus.Labels{"registry": "other", "outcome": "forbidden"}) - forbiddenBefore; got < n {
			t.Errorf(`resolutions with outcome "forbidden": %v more, want at least %v`, got, n)
		}
		if got := gauge(t, "pullgate_registry_requests_total", prometheus.Labels{"registry": "other", "method": http.MethodGet, "code": "forbidden"}) - refusedBefore; got < n {
			t.Errorf(`requests with code "forbidden": %v more, want at least %v`, got, n)
		}
	})
}

// AllowPrivateUnlisted reaches a loopback registry that is not listed. A reload that turns it off
// applies to the registry session already made (no request leaves on it), and an answer cached
// before is not served stale once the registry is refused: a refusal is not an outage.
func TestAllowPrivateUnlisted(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t, withTLS) // not listed: HTTPS only, trusted through the test's roots
	v1, v2 := reg.push(t, "app:v1"), reg.push(t, "app:v2")
	c := newClock()
	opts := func(allow bool) resolve.Options {
		return resolve.Options{Now: c.Now, CacheTTL: time.Minute, MaxStale: time.Hour, AllowPrivateUnlisted: allow}
	}
	r := newGuarded(t, c, opts(true), nil, reg)
	if got, err := r.Resolve(context.Background(), request(reg.ref(t, "app:v1"))); err != nil || got.Digest != v1 {
		t.Fatalf("allowed: Resolve = %+v, %v; want %s", got, err, v1)
	}

	if err := r.Configure(opts(false)); err != nil {
		t.Fatal(err)
	}
	connsBefore := reg.connections()
	reg.requestCounts()
	if _, err := r.Resolve(context.Background(), request(reg.ref(t, "app:v2"))); !errors.Is(err, resolve.ErrForbiddenAddress) {
		t.Errorf("after the reload, on the session made before: err = %v, want ErrForbiddenAddress", err)
	}
	c.Advance(2 * time.Minute) // v1 expired, within MaxStale
	if got, err := r.Resolve(context.Background(), request(reg.ref(t, "app:v1"))); !errors.Is(err, resolve.ErrForbiddenAddress) || got.Digest != "" {
		t.Errorf("expired answer of a refused registry: Resolve = %+v, %v; want ErrForbiddenAddress, no digest", got, err)
	}
	if got := reg.requestCounts(); len(got) != 0 {
		t.Errorf("requests reached the registry after the reload: %v", got)
	}
	if n := reg.connections() - connsBefore; n != 0 {
		t.Errorf("%d connections after the reload", n)
	}

	if err := r.Configure(opts(true)); err != nil {
		t.Fatal(err)
	}
	if got, err := r.Resolve(context.Background(), request(reg.ref(t, "app:v2"))); err != nil || got.Digest != v2 {
		t.Errorf("allowed again: Resolve = %+v, %v; want %s", got, err, v2)
	}
}

// realmGate makes tr a registry that wants a bearer token from realm for every /v2/ request.
// The token is the one realmServer issues.
func realmGate(realm string) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/token" {
			return realmServer(w, r)
		}
		if r.Header.Get("Authorization") == "Bearer realm-token-1234" {
			return false
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="test"`, realm))
		w.WriteHeader(http.StatusUnauthorized)
		return true
	}
}

// realmServer answers /token with a token for anyone.
func realmServer(w http.ResponseWriter, r *http.Request) bool {
	if r.URL.Path != "/token" {
		return false
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"token":"realm-token-1234","expires_in":300}`))
	return true
}

// The token realm of a listed registry may be at a private address only if it is the
// registry's own host or is listed itself; anywhere else it must be public. A challenge does
// not get to send pullgate to an address the policy did not name. The token server here is
// named "localhost", which resolves to loopback: go-containerregistry itself refuses a realm
// at a private IP literal other than the registry's own host:port, whatever the options, and
// that refusal is a forbidden address too.
func TestTokenRealmRule(t *testing.T) {
	t.Parallel()
	const viaName = "registry %[1]s sent pullgate to %[2]s (a token realm or a redirect), which resolves to a loopback address; list %[2]s in the policy to allow it"
	const ipLiteral = "registry %[1]s names a token realm at 127.0.0.1, a private IP address that is not its own host and port; such a realm is refused whatever the policy lists (use the registry's own host and port, or a host name)"
	tests := []struct {
		name         string
		realm        string // the token server's host: "own" for the registry's own host, "name" for localhost:port, "ip" for 127.0.0.1:port
		listRealm    bool
		realmPublic  bool // the address check treats the token server as public
		allowPrivate bool
		wantErr      string // with the registry's host and the token server's host as arguments
	}{
		{name: "the registry's own host", realm: "own"},
		{name: "another private host", realm: "name", wantErr: viaName},
		{name: "another private host, listed", realm: "name", listRealm: true},
		{name: "another host, public", realm: "name", realmPublic: true},
		{name: "another private host, AllowPrivateUnlisted", realm: "name", allowPrivate: true},
		{name: "a private IP literal, listed", realm: "ip", listRealm: true, wantErr: ipLiteral},
		{name: "a private IP literal, AllowPrivateUnlisted", realm: "ip", allowPrivate: true, wantErr: ipLiteral},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg, tokens := newRegistry(t), newRegistry(t)
			want := reg.push(t, "app:v1")
			tokens.setFault(realmServer)
			realmHost := map[string]string{"own": reg.host, "name": "localhost:" + portOf(tokens), "ip": tokens.host}[tt.realm]
			reg.setFault(realmGate("http://" + realmHost + "/token"))
			opts := resolve.Options{AllowPrivateUnlisted: tt.allowPrivate, BreakerFailures: 1, Registries: map[string]resolve.Registry{reg.host: {Insecure: true}}}
			if tt.listRealm {
				opts.Registries[realmHost] = resolve.Registry{Insecure: true}
			}
			check := publicPorts()
			if tt.realmPublic {
				check = publicPorts(tokens)
			}
			r := newGuarded(t, newClock(), opts, check)
			tokens.requestCounts()
			connsBefore := tokens.connections()

			got, err := r.Resolve(context.Background(), request(reg.ref(t, "app:v1")))
			requests := tokens.requestCounts()
			if tt.wantErr == "" {
				if err != nil || got.Digest != want {
					t.Fatalf("Resolve = %+v, %v; want %s", got, err, want)
				}
				if tt.realm != "own" && requests["GET /token"] != 1 {
					t.Errorf("token server saw %v, want one GET /token", requests)
				}
				return
			}
			wantMsg := fmt.Sprintf("resolve %s/app:v1: forbidden address: "+tt.wantErr, reg.host, realmHost)
			if !errors.Is(err, resolve.ErrForbiddenAddress) || err.Error() != wantMsg {
				t.Fatalf("err = %v, want ErrForbiddenAddress:\n  %s", err, wantMsg)
			}
			if conns := tokens.connections() - connsBefore; len(requests) != 0 || conns != 0 {
				t.Errorf("the token server saw %d connections and requests %v, want none", conns, requests)
			}
			// Not a registry failure: the registry's circuit (BreakerFailures 1) stays closed.
			if _, err := r.Resolve(context.Background(), request(reg.ref(t, "app:v1"))); !errors.Is(err, resolve.ErrForbiddenAddress) {
				t.Errorf("second call: err = %v, want ErrForbiddenAddress again", err)
			}
		})
	}
}

// redirectTo makes a registry answer paths under prefix with a 307 to the same path on target.
func redirectTo(target, prefix string) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasPrefix(r.URL.Path, prefix) || (prefix == "/v2/" && r.URL.Path != "/v2/") {
			return false
		}
		http.Redirect(w, r, "https://"+target+r.URL.Path, http.StatusTemporaryRedirect)
		return true
	}
}

// A redirect is followed only where a first request could go: from a registry that is not
// listed (here a loopback server playing a public one), to public addresses only; from a listed
// one, to listed hosts or public addresses. The check is made when the redirect's connection
// is opened, so the private target sees nothing.
func TestRedirectRule(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name               string
		listFrom, listTo   bool
		fromPublic, public bool // the address check treats the redirecting registry, the target, as public
		ping               bool // redirect GET /v2/ rather than the manifest requests
		wantErr            string
	}{
		{name: "unlisted to a private address", fromPublic: true, wantErr: "list both %[1]s and %[2]s"},
		{name: "unlisted to a private address, on the ping", fromPublic: true, ping: true, wantErr: "list both %[1]s and %[2]s"},
		{name: "unlisted to a public address", fromPublic: true, public: true},
		{name: "listed to an unlisted private address", listFrom: true, wantErr: "list %[2]s"},
		{name: "listed to a listed private host", listFrom: true, listTo: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			from, to := newRegistry(t, withTLS), newRegistry(t, withTLS)
			from.push(t, "app:v1")
			want := to.push(t, "app:v1") // another image: the digest says who answered
			prefix := "/v2/app/manifests/"
			if tt.ping {
				prefix = "/v2/"
			}
			from.setFault(redirectTo(to.host, prefix))
			opts := resolve.Options{Registries: map[string]resolve.Registry{}}
			if tt.listFrom {
				opts.Registries[from.host] = resolve.Registry{}
			}
			if tt.listTo {
				opts.Registries[to.host] = resolve.Registry{}
			}
			var public []*testRegistry
			if tt.fromPublic {
				public = append(public, from)
			}
			if tt.public {
				public = append(public, to)
			}
			r := newGuarded(t, newClock(), opts, publicPorts(public...), from, to)
			to.requestCounts()
			connsBefore := to.connections() // the pushes' connections

			got, err := r.Resolve(context.Background(), request(from.ref(t, "app:v1")))
			if tt.wantErr == "" {
				if err != nil || got.Digest != want {
					t.Fatalf("Resolve = %+v, %v; want %s, from the redirect's target", got, err, want)
				}
				return
			}
			wantMsg := fmt.Sprintf("resolve %[1]s/app:v1: forbidden address: registry %[1]s sent pullgate to %[2]s (a token realm or a redirect), which resolves to a loopback address; "+tt.wantErr+" in the policy to allow it",
				from.host, to.host)
			if !errors.Is(err, resolve.ErrForbiddenAddress) || err.Error() != wantMsg {
				t.Fatalf("err = %v, want ErrForbiddenAddress:\n  %s", err, wantMsg)
			}
			if got, conns := to.requestCounts(), to.connections()-connsBefore; len(got) != 0 || conns != 0 {
				t.Errorf("the redirect's target saw %d connections and requests %v, want none", conns, got)
			}
		})
	}
}
