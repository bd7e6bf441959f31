package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// FaultMode is what a FaultProxy does with the next request.
type FaultMode int32

const (
	// Pass forwards to the target.
	Pass FaultMode = iota
	// Hang reads the request and never answers, until the client gives up or the proxy closes:
	// a registry behind a stuck load balancer.
	Hang
	// Unavailable answers 503 at once.
	Unavailable
	// Reset closes the connection without an answer.
	Reset
	// ServerError answers 500 at once, with a registry error body.
	ServerError
	// RateLimited answers 429 with Retry-After, as Docker Hub and Harbor do over their quota.
	RateLimited
	// Slow waits the proxy's Delay (10s unless SetDelay changed it) and then forwards: a registry
	// that does answer, too late.
	Slow
	// LoseDigests answers 404 (MANIFEST_UNKNOWN, BLOB_UNKNOWN) to every manifest or blob asked
	// for by digest and forwards the rest: tags still resolve, to digests the registry will not
	// serve, as when a mirror's storage lost or garbage-collected them.
	LoseDigests
	// LoseManifests answers 404 MANIFEST_UNKNOWN to every manifest, by tag or by digest: a
	// mirror that lost the repository.
	LoseManifests
	// StallMidBlob forwards, but sends only the first half of a blob's body and then nothing
	// more, the connection open, until the client gives up: a mirror stuck mid-transfer.
	StallMidBlob
	// CorruptBlobs forwards, with one byte of every blob's body flipped: the right size, bytes
	// that do not hash to the digest.
	CorruptBlobs
)

// DefaultSlowDelay is how long Slow waits before forwarding.
const DefaultSlowDelay = 10 * time.Second

func (m FaultMode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Hang:
		return "hang"
	case Unavailable:
		return "unavailable"
	case Reset:
		return "reset"
	case ServerError:
		return "500"
	case RateLimited:
		return "429"
	case Slow:
		return "slow"
	case LoseDigests:
		return "lose-digests"
	case LoseManifests:
		return "lose-manifests"
	case StallMidBlob:
		return "stall-mid-blob"
	case CorruptBlobs:
		return "corrupt-blobs"
	}
	return "FaultMode(" + strconv.Itoa(int(m)) + ")"
}

// FaultProxy is an HTTP reverse proxy in front of a registry whose behaviour a test switches at
// run time. Point a policy's mirror at Addr.
type FaultProxy struct {
	// Addr is host:port.
	Addr string
	// Requests counts what the proxy answered (faults included), by kind.
	Requests *RequestCounter

	mode       atomic.Int32
	delay      atomic.Int64 // time.Duration, for Slow
	retryAfter atomic.Pointer[string]
	hits       atomic.Int64
	srv        *http.Server
	release    chan struct{}
	closeOne   sync.Once
}

// FaultProxyOptions say where a FaultProxy listens and how it speaks to both sides.
type FaultProxyOptions struct {
	// Listen is host:0 (or host:port); default 127.0.0.1:0. The node suite's pods reach
	// NodeIP.
	Listen string
	// Cert, when set, makes the proxy serve HTTPS with it.
	Cert *KeyPair
	// TargetCA, when set, makes the proxy speak HTTPS to the target, whose certificate chains
	// to this PEM.
	TargetCA []byte
}

// StartFaultProxy proxies to target (host:port, plain HTTP) in mode Pass; it is closed when
// the test ends.
func StartFaultProxy(t testing.TB, target string) *FaultProxy {
	t.Helper()
	return StartFaultProxyWith(t, target, FaultProxyOptions{})
}

// StartFaultProxyTLS is StartFaultProxy serving HTTPS with cert. Give it a certificate from a CA
// the webhook does not trust to play a mirror with a bad certificate.
func StartFaultProxyTLS(t testing.TB, target string, cert KeyPair) *FaultProxy {
	t.Helper()
	return StartFaultProxyWith(t, target, FaultProxyOptions{Cert: &cert})
}

// StartFaultProxyWith is StartFaultProxy placed and secured as o says.
func StartFaultProxyWith(t testing.TB, target string, o FaultProxyOptions) *FaultProxy {
	t.Helper()
	scheme, tr := "http", http.DefaultTransport
	if o.TargetCA != nil {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(o.TargetCA)
		scheme, tr = "https", &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	u, err := url.Parse(scheme + "://" + target)
	if err != nil {
		t.Fatalf("fault proxy target: %v", err)
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", o.Listen)
	if err != nil {
		t.Fatalf("fault proxy listen: %v", err)
	}
	f := &FaultProxy{Addr: l.Addr().String(), Requests: &RequestCounter{}, release: make(chan struct{})}
	f.delay.Store(int64(DefaultSlowDelay))
	f.SetRetryAfter("10")
	proxy := func(body func(*http.Response) io.ReadCloser) *httputil.ReverseProxy {
		rp := httputil.NewSingleHostReverseProxy(u)
		rp.Transport = tr
		// A client that leaves mid-request (a warm's sibling reads cancelled) is no news.
		rp.ErrorLog = log.New(io.Discard, "", 0)
		if body != nil {
			// Each write goes out at once: a stalled body has sent what it sent.
			rp.FlushInterval = -1
			rp.ModifyResponse = func(resp *http.Response) error {
				if resp.StatusCode == http.StatusOK {
					resp.Body = body(resp)
				}
				return nil
			}
		}
		return rp
	}
	rp := proxy(nil)
	stalling := proxy(func(resp *http.Response) io.ReadCloser {
		return &stallingBody{ReadCloser: resp.Body, left: resp.ContentLength / 2, ctx: resp.Request.Context(), release: f.release}
	})
	corrupting := proxy(func(resp *http.Response) io.ReadCloser { return &flippedBody{ReadCloser: resp.Body} })
	f.srv = &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		// A TLS handshake failure is the client's doing; do not log it to stderr.
		ErrorLog: log.New(io.Discard, "", 0),
		Handler: f.Requests.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			f.hits.Add(1)
			blobGET := r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:")
			switch FaultMode(f.mode.Load()) {
			case Hang:
				select {
				case <-r.Context().Done():
				case <-f.release:
				}
			case Unavailable:
				http.Error(w, "injected fault", http.StatusServiceUnavailable)
			case ServerError:
				registryError(w, http.StatusInternalServerError, "UNKNOWN", "injected fault")
			case RateLimited:
				w.Header().Set("Retry-After", *f.retryAfter.Load())
				registryError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", "injected fault: rate limit exceeded")
			case Slow:
				select {
				case <-r.Context().Done():
					return
				case <-f.release:
					return
				case <-time.After(time.Duration(f.delay.Load())):
				}
				rp.ServeHTTP(w, r)
			case LoseDigests:
				switch kind, byDigest := objectKind(r.URL.Path); {
				case byDigest && kind == "manifests":
					registryError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "injected fault: manifest unknown")
				case byDigest && kind == "blobs":
					registryError(w, http.StatusNotFound, "BLOB_UNKNOWN", "injected fault: blob unknown")
				default:
					rp.ServeHTTP(w, r)
				}
			case LoseManifests:
				if kind, _ := objectKind(r.URL.Path); kind == "manifests" {
					registryError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "injected fault: manifest unknown")
					return
				}
				rp.ServeHTTP(w, r)
			case Reset:
				hj, ok := w.(http.Hijacker)
				if !ok {
					http.Error(w, "cannot hijack", http.StatusInternalServerError)
					return
				}
				conn, _, err := hj.Hijack()
				if err == nil {
					if tc, ok := conn.(*net.TCPConn); ok {
						_ = tc.SetLinger(0) // RST rather than FIN
					}
					conn.Close()
				}
			case StallMidBlob:
				if blobGET {
					stalling.ServeHTTP(w, r)
					return
				}
				rp.ServeHTTP(w, r)
			case CorruptBlobs:
				if blobGET {
					corrupting.ServeHTTP(w, r)
					return
				}
				rp.ServeHTTP(w, r)
			default:
				rp.ServeHTTP(w, r)
			}
		})),
	}
	if o.Cert != nil {
		c, err := o.Cert.TLS()
		if err != nil {
			t.Fatalf("fault proxy certificate: %v", err)
		}
		l = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12})
	}
	go func() {
		if err := f.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("fault proxy: %v", err)
		}
	}()
	t.Cleanup(f.Close)
	return f
}

// objectKind splits a registry API path /v2/<name>/{manifests,blobs}/<reference>: kind is
// "manifests", "blobs" or "" for anything else, byDigest whether the reference is a digest.
func objectKind(path string) (kind string, byDigest bool) {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return "", false
	}
	for _, k := range []string{"manifests", "blobs"} {
		if i := strings.LastIndex(rest, "/"+k+"/"); i > 0 {
			return k, strings.HasPrefix(rest[i+len(k)+2:], "sha256:")
		}
	}
	return "", false
}

// registryError answers the way the distribution spec says a registry reports an error.
func registryError(w http.ResponseWriter, code int, errCode, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": errCode, "message": message}}})
}

// SetMode switches what the proxy does from the next request on.
func (f *FaultProxy) SetMode(m FaultMode) { f.mode.Store(int32(m)) }

// SetDelay sets how long Slow waits before forwarding.
func (f *FaultProxy) SetDelay(d time.Duration) { f.delay.Store(int64(d)) }

// SetRetryAfter sets the Retry-After of RateLimited's answers ("10" unless changed).
func (f *FaultProxy) SetRetryAfter(v string) { f.retryAfter.Store(&v) }

// Hits counts the requests the proxy received.
func (f *FaultProxy) Hits() int64 { return f.hits.Load() }

// Close releases hung requests and stops the proxy.
func (f *FaultProxy) Close() {
	f.closeOne.Do(func() {
		close(f.release)
		_ = f.srv.Close()
	})
}

// ClosedAddr is a loopback host:port with no listener: connections are refused.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	ports, err := FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(ports[0])
}

// stallingBody passes left bytes, then blocks until ctx ends (the client went away) or the
// proxy closes.
type stallingBody struct {
	io.ReadCloser
	left    int64
	ctx     context.Context
	release <-chan struct{}
}

func (b *stallingBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		select {
		case <-b.ctx.Done():
			return 0, b.ctx.Err()
		case <-b.release:
			return 0, errors.New("fault proxy closed")
		}
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}

// flippedBody flips the first byte it passes.
type flippedBody struct {
	io.ReadCloser
	done bool
}

func (b *flippedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 && !b.done {
		p[0] ^= 0xff
		b.done = true
	}
	return n, err
}
