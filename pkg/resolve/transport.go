package resolve

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// transports holds, per TLS configuration (system roots, or system roots plus one CA bundle),
// two immutable *http.Transports, each wrapped once in the request counter: the open one, and
// its guarded twin, which connects to public addresses only and never through a proxy (see
// route). Registries with the same bundle share connections; nothing is cloned per call. The
// twins have separate connection pools, so a connection the open one made to a private address
// is never lent to a guarded request. Entries survive Configure while some registry still uses
// them.
type transports struct {
	// check, proxy and roots are set once, before the first get: the address check of guarded
	// transports, the proxy function of open ones (http.ProxyFromEnvironment), and the roots
	// that stand in for the system's (nil: the system's; tests replace them).
	check addressCheck
	proxy func(*http.Request) (*url.URL, error)
	roots *x509.CertPool

	mu sync.Mutex
	m  map[[sha256.Size]byte]transportPair
}

type transportPair struct {
	open, guarded *counting
}

// get returns the round trippers for a CA bundle, building them on first use.
func (t *transports) get(bundle []byte, count countFunc) (open, guarded http.RoundTripper, err error) {
	key := sha256.Sum256(bundle)
	t.mu.Lock()
	defer t.mu.Unlock()
	if p, ok := t.m[key]; ok {
		return p.open, p.guarded, nil
	}
	roots := t.roots
	if len(bundle) > 0 {
		pool, err := x509.SystemCertPool()
		if t.roots != nil {
			pool, err = t.roots.Clone(), nil
		}
		if err != nil {
			// No system roots (a scratch image without certs): the bundle alone.
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(bundle) {
			return nil, nil, errors.New("no PEM certificate in the CA bundle")
		}
		roots = pool
	}
	dialer := net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	ot := newHTTPTransport(roots)
	ot.Proxy, ot.DialContext = t.proxy, dialer.DialContext
	gt := newHTTPTransport(roots)
	gt.Proxy, gt.DialContext = refuseProxy(t.proxy), guardedDial(dialer, t.check)
	p := transportPair{open: &counting{inner: ot, count: count}, guarded: &counting{inner: gt, count: count}}
	if t.m == nil {
		t.m = make(map[[sha256.Size]byte]transportPair)
	}
	t.m[key] = p
	return p.open, p.guarded, nil
}

// keep drops the transports whose bundle no registry uses any more, closing their idle
// connections. Requests in flight on them finish normally.
func (t *transports) keep(bundles [][]byte) {
	used := make(map[[sha256.Size]byte]bool, len(bundles))
	for _, b := range bundles {
		used[sha256.Sum256(b)] = true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, p := range t.m {
		if !used[k] {
			p.open.inner.CloseIdleConnections()
			p.guarded.inner.CloseIdleConnections()
			delete(t.m, k)
		}
	}
}

// newHTTPTransport is go-containerregistry's DefaultTransport with shorter connection set-up
// timeouts, less its proxy and dialer, which get sets. The caller's deadline bounds each
// request as a whole; the dialer's and handshake's timeouts only stop one slow dial or
// handshake from eating all of it.
func newHTTPTransport(roots *x509.CertPool) *http.Transport {
	return &http.Transport{
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// counting counts every HTTP request that reaches the network, retries and token exchanges
// included.
type counting struct {
	inner *http.Transport
	count countFunc
}

// countFunc records one request and what came of it.
type countFunc func(*http.Request, *http.Response, error)

func (c *counting) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.inner.RoundTrip(req)
	c.count(req, resp, err)
	return resp, err
}

// requestCounter returns the count hook for the transports: label by registry host (or
// "other"), method and status code, "error" when there was no answer and "forbidden" when the
// request was refused before it left (see ErrForbiddenAddress).
func requestCounter(vec *prometheus.CounterVec, label func(host string) string) countFunc {
	return func(req *http.Request, resp *http.Response, err error) {
		code := "error"
		switch {
		case resp != nil:
			code = strconv.Itoa(resp.StatusCode)
		case errors.Is(err, ErrForbiddenAddress):
			code = "forbidden"
		}
		vec.WithLabelValues(label(req.URL.Host), req.Method, code).Inc()
	}
}

func bundleError(host string, err error) error {
	return fmt.Errorf("registry %s: caBundle: %w", host, err)
}
