package resolve_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	ggcrmutate "github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/resolve"
)

var _ contract.Resolver = (*resolve.Resolver)(nil)

// testRegistry is go-containerregistry's in-memory registry behind a handler that counts
// manifest requests and can inject faults.
type testRegistry struct {
	srv  *httptest.Server
	host string

	// fault, when set, sees every request first; it returns true when it has answered.
	fault atomic.Pointer[func(w http.ResponseWriter, r *http.Request) bool]
	// done is closed when the test ends, releasing handlers that hang.
	done chan struct{}
	// cert, once set, replaces the certificate a TLS registry presents.
	cert atomic.Pointer[tls.Certificate]

	registryHandler http.HandlerFunc // the registry itself, for faults that wrap its answers
	// pushes is the test's own client. One connection at a time: a client free to open more
	// may still be dialling one when the push returns, which would then count as a connection
	// made by the code under test.
	pushes *http.Transport

	// tlsConns and plainConns count the connections that opened with a TLS handshake and
	// with anything else (plain HTTP), whether or not the server could make sense of them:
	// an HTTPS attempt on a plain-HTTP registry never reaches a handler.
	tlsConns, plainConns atomic.Int64

	mu       sync.Mutex
	counts   map[string]int // manifest requests: "HEAD /v2/repo/manifests/tag"
	requests map[string]int // every request that reached the handler: "GET /v2/", "GET /token"
}

// withTLS serves TLS with httptest's certificate, or with the one in tr.cert once set.
func withTLS(tr *testRegistry, srv *httptest.Server) {
	srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		if c := tr.cert.Load(); c != nil {
			return &tls.Config{Certificates: []tls.Certificate{*c}}, nil
		}
		return nil, nil
	}}
}

// onIPv6Loopback serves on [::1] instead of 127.0.0.1. Where the host has no IPv6 loopback the
// test is skipped: that is the machine's limit, not a failure of the code under test.
func onIPv6Loopback(t testing.TB) func(*testRegistry, *httptest.Server) {
	return func(_ *testRegistry, srv *httptest.Server) {
		_ = srv.Listener.Close()
		l, err := net.Listen("tcp", "[::1]:0")
		if err != nil {
			t.Skipf("no IPv6 loopback here: %v", err)
		}
		srv.Listener = l
	}
}

func newRegistry(t testing.TB, opts ...func(*testRegistry, *httptest.Server)) *testRegistry {
	t.Helper()
	tr := &testRegistry{done: make(chan struct{}), counts: map[string]int{}, requests: map[string]int{}}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	tr.registryHandler = reg.ServeHTTP
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.UserAgent(), pushAgent) {
			tr.mu.Lock()
			tr.requests[r.Method+" "+r.URL.Path]++
			if strings.Contains(r.URL.Path, "/manifests/") {
				tr.counts[r.Method+" "+r.URL.Path]++
			}
			tr.mu.Unlock()
		}
		if f := tr.fault.Load(); f != nil && (*f)(w, r) {
			return
		}
		reg.ServeHTTP(w, r)
	})
	srv := httptest.NewUnstartedServer(h)
	// The bad-TLS tests make handshakes fail on purpose; their log lines are noise.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	for _, o := range opts {
		o(tr, srv)
	}
	srv.Listener = &sniffListener{Listener: srv.Listener, tls: &tr.tlsConns, plain: &tr.plainConns}
	if srv.TLS != nil {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	// Cleanups run last-in first-out: release hanging handlers, then close the server.
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(tr.done) })
	tr.srv = srv
	tr.host = strings.TrimPrefix(strings.TrimPrefix(srv.URL, "http://"), "https://")
	tr.pushes = srv.Client().Transport.(*http.Transport).Clone()
	tr.pushes.MaxConnsPerHost = 1
	t.Cleanup(tr.pushes.CloseIdleConnections)
	return tr
}

func (tr *testRegistry) setFault(f func(w http.ResponseWriter, r *http.Request) bool) {
	if f == nil {
		tr.fault.Store(nil)
		return
	}
	tr.fault.Store(&f)
}

// requestCounts returns how many requests reached the registry since the last call, by
// "METHOD path", the test's pushes left out.
func (tr *testRegistry) requestCounts() map[string]int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := tr.requests
	tr.requests = map[string]int{}
	return out
}

// sniffListener tells connections that open with a TLS handshake record (0x16) from others.
type sniffListener struct {
	net.Listener
	tls, plain *atomic.Int64
}

func (l *sniffListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sniffConn{Conn: c, l: l}, nil
}

type sniffConn struct {
	net.Conn
	l    *sniffListener
	once sync.Once
}

func (c *sniffConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.once.Do(func() {
			if p[0] == 0x16 {
				c.l.tls.Add(1)
			} else {
				c.l.plain.Add(1)
			}
		})
	}
	return n, err
}

// count returns how many manifest requests with method reached repo:tagOrDigest.
func (tr *testRegistry) count(method, repo, id string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.counts[fmt.Sprintf("%s /v2/%s/manifests/%s", method, repo, id)]
}

// manifestRequests counts every manifest request, whatever the method and path.
func (tr *testRegistry) manifestRequests() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, c := range tr.counts {
		n += c
	}
	return n
}

func (tr *testRegistry) ref(t testing.TB, repoTag string) name.Tag {
	t.Helper()
	tag, err := name.NewTag(tr.host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

// pushAgent marks the test's own pushes, which the counts leave out.
const pushAgent = "pullgate-test-push"

func (tr *testRegistry) remoteOpts() []remote.Option {
	return []remote.Option{remote.WithUserAgent(pushAgent), remote.WithTransport(tr.pushes)}
}

// push writes a random image to repoTag and returns its digest.
func (tr *testRegistry) push(t testing.TB, repoTag string) string {
	t.Helper()
	return tr.pushImage(t, repoTag, randomImage(t))
}

func (tr *testRegistry) pushImage(t testing.TB, repoTag string, img v1.Image) string {
	t.Helper()
	ref, err := name.ParseReference(tr.host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, tr.remoteOpts()...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func (tr *testRegistry) pushIndex(t testing.TB, repoTag string, idx v1.ImageIndex) string {
	t.Helper()
	ref, err := name.ParseReference(tr.host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx, tr.remoteOpts()...); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func randomImage(t testing.TB) v1.Image {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func ociImage(t testing.TB) v1.Image {
	t.Helper()
	return ggcrmutate.ConfigMediaType(ggcrmutate.MediaType(randomImage(t), types.OCIManifestSchema1), types.OCIConfigJSON)
}

func randomIndex(t testing.TB, mt types.MediaType) v1.ImageIndex {
	t.Helper()
	idx, err := random.Index(256, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	return ggcrmutate.IndexMediaType(idx, mt)
}

// clock is the injectable clock for cache expiry and breaker cooldowns.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newResolver makes a Resolver on the clock with every given registry listed.
func newResolver(t testing.TB, c *clock, opts resolve.Options, regs ...*testRegistry) *resolve.Resolver {
	t.Helper()
	opts.Now = c.Now
	if opts.Registries == nil {
		opts.Registries = map[string]resolve.Registry{}
	}
	for _, tr := range regs {
		if _, ok := opts.Registries[tr.host]; !ok {
			opts.Registries[tr.host] = resolve.Registry{Insecure: tr.srv.TLS == nil, CABundle: tr.caBundle()}
		}
	}
	r, err := resolve.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (tr *testRegistry) caBundle() []byte {
	if tr.srv.TLS == nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tr.srv.Certificate().Raw})
}

func request(ref name.Tag) contract.ResolveRequest {
	return contract.ResolveRequest{Ref: ref, Upstream: ref}
}

// hang blocks manifest requests until the client gives up or the test ends.
func (tr *testRegistry) hang(w http.ResponseWriter, r *http.Request) bool {
	if !strings.Contains(r.URL.Path, "/manifests/") {
		return false
	}
	select {
	case <-r.Context().Done():
	case <-tr.done:
	}
	return true
}

// status answers manifest requests with code.
func status(code int) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/manifests/") {
			return false
		}
		w.WriteHeader(code)
		return true
	}
}

// untrustedCert is a self-signed certificate for 127.0.0.1 that nothing trusts.
func untrustedCert(t testing.TB) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "untrusted"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// resolveWithin resolves under a deadline of d and fails the test when the call overruns it
// by more than 100 ms.
func resolveWithin(t testing.TB, r *resolve.Resolver, req contract.ResolveRequest, d time.Duration) (contract.Resolution, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	res, err := r.Resolve(ctx, req)
	if took := time.Since(start); took > d+100*time.Millisecond {
		t.Errorf("Resolve(%s) took %s, want at most %s", req.Ref, took, d+100*time.Millisecond)
	}
	return res, err
}

func basicAuth(user, pass string) authn.Authenticator {
	return &authn.Basic{Username: user, Password: pass}
}

// keychainFor builds a keychain the way cmd does, from a dockerconfigjson secret.
func keychainFor(host, user, pass string) authn.Keychain {
	data := fmt.Sprintf(`{"auths":{%q:{"username":%q,"password":%q}}}`, host, user, pass)
	kc, err := resolve.KeychainFromDockerConfigJSON([]byte(data))
	if err != nil {
		panic(err)
	}
	return kc
}

// requireBasic makes the registry demand HTTP basic credentials, as a registry with
// htpasswd auth does.
func requireBasic(user, pass string) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if u, p, ok := r.BasicAuth(); ok && u == user && p == pass {
			return false
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		w.WriteHeader(http.StatusUnauthorized)
		return true
	}
}

// circuitOpen reads pullgate_registry_circuit_open for a registry from controller-runtime's
// registry, where the resolver registers its metrics.
func circuitOpen(t testing.TB, host string) float64 {
	t.Helper()
	return gauge(t, "pullgate_registry_circuit_open", prometheus.Labels{"registry": host})
}

// gauge returns the value of a gauge or counter with exactly these labels, 0 when absent.
func gauge(t testing.TB, metric string, labels prometheus.Labels) float64 {
	t.Helper()
	families, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != metric {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			switch {
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}
