package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// mirrorConfig is the Distribution configuration of the pull-through cache. The proxy section
// is what makes it a mirror: a miss is fetched from remoteurl and stored, so it keeps serving a
// digest after the upstream is gone.
const mirrorConfig = `version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: pullgate-e2e
proxy:
  remoteurl: %s
`

func (e *Env) startRegistries(ctx context.Context) error {
	// Upstream: go-containerregistry's registry in process. Tests push to it directly.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("upstream registry: listen: %w", err)
	}
	logf, err := os.Create(filepath.Join(e.Dir, "upstream-registry.log"))
	if err != nil {
		l.Close()
		return fmt.Errorf("upstream registry log: %w", err)
	}
	srv := &http.Server{
		Handler:           registry.New(registry.Logger(log.New(logf, "", log.LstdFlags|log.Lmicroseconds))),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(l) }()
	e.onClose(func() {
		_ = srv.Close()
		logf.Close()
	})
	e.Upstream = l.Addr().String()

	// Mirror: Distribution in proxy mode, a separate process like in a real cluster.
	_, err = startWithPorts(func() (*Process, error) {
		ports, err := FreePorts(1)
		if err != nil {
			return nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(ports[0])
		data := filepath.Join(e.Dir, "mirror-data")
		_ = os.RemoveAll(data)
		cfgPath := filepath.Join(e.Dir, "mirror.yaml")
		cfg := fmt.Sprintf(mirrorConfig, data, addr, "http://"+e.Upstream)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			return nil, fmt.Errorf("write mirror config: %w", err)
		}
		p, err := e.startProcess("mirror", filepath.Join(e.Dir, "mirror.log"), e.Opts.Registry, "serve", cfgPath)
		if err != nil {
			return nil, err
		}
		err = WaitReady(ctx, p, 30*time.Second, func(ctx context.Context) error {
			return httpOK(ctx, http.DefaultClient, "http://"+addr+"/v2/")
		})
		if err != nil {
			p.Stop(5 * time.Second)
			return nil, err
		}
		e.Mirror = addr
		return p, nil
	})
	if err != nil {
		return fmt.Errorf("mirror registry: %w", err)
	}
	return nil
}

// UpstreamRef is repo[:tag|@digest] on the upstream registry, e.g. "127.0.0.1:40123/e2e/app:v1".
func (e *Env) UpstreamRef(repo string) string { return e.Upstream + "/" + repo }

// MirrorRef is repo[:tag|@digest] on the mirror.
func (e *Env) MirrorRef(repo string) string { return e.Mirror + "/" + repo }

// PushImage pushes a small random single-platform image to the upstream as repoTag ("e2e/app:v1")
// and returns its manifest digest.
func (e *Env) PushImage(t testing.TB, repoTag string) v1.Hash {
	t.Helper()
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatalf("random image: %v", err)
	}
	ref := e.parse(t, e.UpstreamRef(repoTag))
	if err := remote.Write(ref, img, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("digest of %s: %v", ref, err)
	}
	return d
}

// PushIndex pushes a multi-platform image (one random image per platform) as repoTag, with the
// index media type mt (types.DockerManifestList or types.OCIImageIndex), and returns the index
// digest.
func (e *Env) PushIndex(t testing.TB, repoTag string, mt types.MediaType, platforms ...v1.Platform) v1.Hash {
	t.Helper()
	imgType := types.DockerManifestSchema2
	if mt == types.OCIImageIndex {
		imgType = types.OCIManifestSchema1
	}
	idx := mutate.IndexMediaType(empty.Index, mt)
	for _, p := range platforms {
		img, err := random.Image(512, 1)
		if err != nil {
			t.Fatalf("random image: %v", err)
		}
		img = mutate.MediaType(img, imgType)
		if imgType == types.OCIManifestSchema1 {
			img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &p},
		})
	}
	ref := e.parse(t, e.UpstreamRef(repoTag))
	if err := remote.WriteIndex(ref, idx, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("push index %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatalf("digest of %s: %v", ref, err)
	}
	return d
}

// Head asks a registry what ref names right now, without going through pullgate.
func (e *Env) Head(t testing.TB, ref string) *v1.Descriptor {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	d, err := remote.Head(e.parse(t, ref), remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("HEAD %s: %v", ref, err)
	}
	return d
}

func (e *Env) parse(t testing.TB, ref string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("parse %q: %v", ref, err)
	}
	return r
}

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
	}
	return "FaultMode(" + strconv.Itoa(int(m)) + ")"
}

// FaultProxy is an HTTP reverse proxy in front of a registry whose behaviour a test switches at
// run time. Point a policy's mirror at Addr.
type FaultProxy struct {
	// Addr is host:port.
	Addr string

	mode     atomic.Int32
	delay    atomic.Int64 // time.Duration, for Slow
	hits     atomic.Int64
	srv      *http.Server
	release  chan struct{}
	closeOne sync.Once
}

// StartFaultProxy proxies to target (host:port, plain HTTP) in mode Pass; it is closed when
// the test ends.
func StartFaultProxy(t testing.TB, target string) *FaultProxy {
	t.Helper()
	return startFaultProxy(t, target, nil)
}

// StartFaultProxyTLS is StartFaultProxy serving HTTPS with cert. Give it a certificate from a CA
// the webhook does not trust to play a mirror with a bad certificate.
func StartFaultProxyTLS(t testing.TB, target string, cert KeyPair) *FaultProxy {
	t.Helper()
	c, err := cert.TLS()
	if err != nil {
		t.Fatalf("fault proxy certificate: %v", err)
	}
	return startFaultProxy(t, target, &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12})
}

func startFaultProxy(t testing.TB, target string, tlsConfig *tls.Config) *FaultProxy {
	t.Helper()
	u, err := url.Parse("http://" + target)
	if err != nil {
		t.Fatalf("fault proxy target: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("fault proxy listen: %v", err)
	}
	f := &FaultProxy{Addr: l.Addr().String(), release: make(chan struct{})}
	f.delay.Store(int64(DefaultSlowDelay))
	rp := httputil.NewSingleHostReverseProxy(u)
	f.srv = &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		// A TLS handshake failure is the client's doing; do not log it to stderr.
		ErrorLog: log.New(io.Discard, "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			f.hits.Add(1)
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
				w.Header().Set("Retry-After", "10")
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
			default:
				rp.ServeHTTP(w, r)
			}
		}),
	}
	if tlsConfig != nil {
		l = tls.NewListener(l, tlsConfig)
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
