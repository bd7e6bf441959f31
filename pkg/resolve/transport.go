package resolve

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// transports holds one immutable *http.Transport per TLS configuration (system roots, or
// system roots plus one CA bundle), each wrapped once in the request counter. Registries with
// the same bundle share connections; nothing is cloned per call. Entries survive Configure
// while some registry still uses them.
type transports struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]http.RoundTripper
}

// get returns the round tripper for a CA bundle, building it on first use.
func (t *transports) get(bundle []byte, count func(*http.Request, *http.Response)) (http.RoundTripper, error) {
	key := sha256.Sum256(bundle)
	t.mu.Lock()
	defer t.mu.Unlock()
	if rt, ok := t.m[key]; ok {
		return rt, nil
	}
	var roots *x509.CertPool
	if len(bundle) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil {
			// No system roots (a scratch image without certs): the bundle alone.
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(bundle) {
			return nil, errors.New("no PEM certificate in the CA bundle")
		}
		roots = pool
	}
	rt := &counting{inner: newHTTPTransport(roots), count: count}
	if t.m == nil {
		t.m = make(map[[sha256.Size]byte]http.RoundTripper)
	}
	t.m[key] = rt
	return rt, nil
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
	for k, rt := range t.m {
		if !used[k] {
			rt.(*counting).inner.CloseIdleConnections()
			delete(t.m, k)
		}
	}
}

// newHTTPTransport is go-containerregistry's DefaultTransport with shorter connection set-up
// timeouts. The caller's deadline bounds each request as a whole; these only stop one slow
// dial or handshake from eating all of it.
func newHTTPTransport(roots *x509.CertPool) *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
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
	count func(*http.Request, *http.Response)
}

func (c *counting) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.inner.RoundTrip(req)
	c.count(req, resp)
	return resp, err
}

// requestCounter returns the count hook for the transports: label by registry host (or
// "other"), method and status code.
func requestCounter(vec *prometheus.CounterVec, label func(host string) string) func(*http.Request, *http.Response) {
	return func(req *http.Request, resp *http.Response) {
		code := "error"
		if resp != nil {
			code = strconv.Itoa(resp.StatusCode)
		}
		vec.WithLabelValues(label(req.URL.Host), req.Method, code).Inc()
	}
}

func bundleError(host string, err error) error {
	return fmt.Errorf("registry %s: caBundle: %w", host, err)
}
