package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"golang.org/x/crypto/bcrypt"
)

// NodeRegistries are the registries of the node suite, as a cluster sees them:
//
//	Remote  what pod authors write: the "remote" upstream, reached by the node through RemoteLink
//	Mirror  Distribution as an authenticated (TLS + htpasswd) pull-through cache, which fetches
//	        from the same upstream through MirrorLink
//	Infra   an unauthenticated registry for the pause and pullgate images
//
// The upstream counts what each side asked of it, so a test can show that the node never
// reached it and that the mirror fetched each blob once.
type NodeRegistries struct {
	Remote string
	Mirror string
	Infra  string

	MirrorUser, MirrorPassword string
	// MirrorCA is the PEM the mirror's certificate chains to; MirrorCAFile holds it on disk.
	MirrorCA     []byte
	MirrorCAFile string
	// MirrorLog is Distribution's log, with one access-log line per request.
	MirrorLog string

	// RemoteLink and MirrorLink carry the node's and the mirror's traffic to the upstream.
	RemoteLink, MirrorLink *Link
	// NodeRequests and MirrorRequests count what reached the upstream through each link.
	NodeRequests, MirrorRequests *RequestCounter

	// push is the upstream's uncounted address for the suite's own pushes.
	push       string
	mirrorArgs []string
	mirrorProc *Process
	env        *Env
}

// NodeRegistryOptions shape the remote upstream.
type NodeRegistryOptions struct {
	Link LinkOptions
}

func (e *Env) startNodeRegistries(ctx context.Context, o NodeRegistryOptions) (*NodeRegistries, error) {
	r := &NodeRegistries{env: e, MirrorUser: "pullgate-e2e", MirrorPassword: "mirror-secret"}

	// The upstream stores blobs on disk: node benchmarks push images of a gigabyte and more.
	blobs := filepath.Join(e.Dir, "upstream-blobs")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(e.Dir, "upstream-registry.log"))
	if err != nil {
		return nil, err
	}
	e.onClose(func() { logf.Close() })
	upstream := registry.New(
		registry.Logger(log.New(logf, "", log.LstdFlags|log.Lmicroseconds)),
		registry.WithBlobHandler(registry.NewDiskBlobHandler(blobs)),
	)
	r.NodeRequests, r.MirrorRequests = &RequestCounter{}, &RequestCounter{}
	var pushAddr, nodeAddr, mirrorAddr string
	for _, s := range []struct {
		addr *string
		h    http.Handler
	}{
		{&pushAddr, upstream},
		{&nodeAddr, r.NodeRequests.Wrap(upstream)},
		{&mirrorAddr, r.MirrorRequests.Wrap(upstream)},
	} {
		if *s.addr, err = e.serveHTTP("127.0.0.1:0", s.h); err != nil {
			return nil, fmt.Errorf("upstream registry: %w", err)
		}
	}
	r.push = pushAddr
	if r.RemoteLink, err = StartLink(NodeIP+":0", nodeAddr, o.Link); err != nil {
		return nil, err
	}
	if r.MirrorLink, err = StartLink("127.0.0.1:0", mirrorAddr, o.Link); err != nil {
		return nil, err
	}
	e.onClose(r.RemoteLink.Stop)
	e.onClose(r.MirrorLink.Stop)
	r.Remote = r.RemoteLink.Addr

	infra := registry.New(registry.Logger(log.New(logf, "infra ", log.LstdFlags)))
	if r.Infra, err = e.serveHTTP(NodeIP+":0", infra); err != nil {
		return nil, fmt.Errorf("infra registry: %w", err)
	}

	if err := r.startMirror(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// serveHTTP serves h on a new listener until the Env closes and returns its address.
func (e *Env) serveHTTP(listen string, h http.Handler) (string, error) {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	e.onClose(func() { _ = srv.Close() })
	return l.Addr().String(), nil
}

const nodeMirrorConfig = `version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: pullgate-e2e
  tls:
    certificate: %s
    key: %s
auth:
  htpasswd:
    realm: pullgate-e2e
    path: %s
proxy:
  remoteurl: http://%s
`

func (r *NodeRegistries) startMirror(ctx context.Context) error {
	e := r.env
	dir := filepath.Join(e.Dir, "mirror")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ca, err := NewCA("pullgate-e2e-mirror-ca")
	if err != nil {
		return err
	}
	serving, err := ca.Serving("mirror", []string{"localhost"}, []net.IP{net.ParseIP(NodeIP), net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	if err := serving.WriteFiles(dir, "tls.crt", "tls.key"); err != nil {
		return err
	}
	r.MirrorCA, r.MirrorCAFile = ca.CertPEM, filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(r.MirrorCAFile, ca.CertPEM, 0o644); err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(r.MirrorPassword), bcrypt.MinCost)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "htpasswd"), []byte(r.MirrorUser+":"+string(hash)+"\n"), 0o600); err != nil {
		return err
	}
	ports, err := FreePorts(1)
	if err != nil {
		return err
	}
	r.Mirror = NodeIP + ":" + strconv.Itoa(ports[0])
	cfg := fmt.Sprintf(nodeMirrorConfig, filepath.Join(dir, "data"), r.Mirror,
		filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "htpasswd"), r.MirrorLink.Addr)
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	r.MirrorLog = filepath.Join(e.Dir, "mirror.log")
	r.mirrorArgs = []string{"serve", cfgPath}
	return r.StartMirror(ctx)
}

// StartMirror (re)starts the mirror process on its address and storage.
func (r *NodeRegistries) StartMirror(ctx context.Context) error {
	e := r.env
	p, err := e.startProcess("mirror", r.MirrorLog, e.Opts.MirrorRegistry, r.mirrorArgs...)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(r.MirrorCA)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	err = WaitReady(ctx, p, 30*time.Second, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+r.Mirror+"/v2/", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			return fmt.Errorf("anonymous /v2/: %s, want 401", resp.Status)
		}
		return nil
	})
	if err != nil {
		p.Stop(5 * time.Second)
		return fmt.Errorf("mirror: %w", err)
	}
	r.mirrorProc = p
	return nil
}

// StopMirror stops the mirror process; its storage stays for StartMirror.
func (r *NodeRegistries) StopMirror() {
	if r.mirrorProc != nil {
		r.mirrorProc.Stop(10 * time.Second)
		r.mirrorProc = nil
	}
}

// StopUpstream makes the remote upstream unreachable from the node and the mirror alike.
func (r *NodeRegistries) StopUpstream() {
	r.RemoteLink.Stop()
	r.MirrorLink.Stop()
}

// ResumeUpstream undoes StopUpstream.
func (r *NodeRegistries) ResumeUpstream() error {
	if err := r.RemoteLink.Resume(); err != nil {
		return err
	}
	return r.MirrorLink.Resume()
}

// PushRef is the upstream address the suite pushes repo[:tag] to (uncounted); pods name the
// same image as Remote + "/" + repo.
func (r *NodeRegistries) PushRef(repo string) string { return r.push + "/" + repo }

// RemoteRef is repo[:tag|@digest] as a pod author writes it.
func (r *NodeRegistries) RemoteRef(repo string) string { return r.Remote + "/" + repo }

// MirrorRef is repo[:tag|@digest] on the mirror.
func (r *NodeRegistries) MirrorRef(repo string) string { return r.Mirror + "/" + repo }

// RequestCounter counts registry requests by kind, and blob downloads by repository and digest.
type RequestCounter struct {
	mu       sync.Mutex
	total    int
	manifest int
	blobs    map[string]int
	bytes    int64
}

// Wrap counts every request h serves.
func (c *RequestCounter) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cw := &countingWriter{ResponseWriter: w}
		// Deferred: a reverse proxy whose client left mid-body aborts with a panic
		// (http.ErrAbortHandler), and that request counts too.
		defer c.count(r, cw)
		h.ServeHTTP(cw, r)
	})
}

func (c *RequestCounter) count(r *http.Request, cw *countingWriter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total++
	switch {
	case strings.Contains(r.URL.Path, "/manifests/"):
		c.manifest++
	case strings.Contains(r.URL.Path, "/blobs/sha256:") && r.Method == http.MethodGet:
		if c.blobs == nil {
			c.blobs = map[string]int{}
		}
		// Per repository: a registry links blobs per repository, so a blob shared by two
		// images is fetched once for each.
		c.blobs[r.URL.Path]++
	}
	c.bytes += cw.n
}

// RequestCounts is a snapshot of a RequestCounter.
type RequestCounts struct {
	Total, Manifests int
	// Blobs counts GETs per blob path (/v2/<repository>/blobs/<digest>).
	Blobs map[string]int
	Bytes int64
}

// Snapshot returns the counts so far.
func (c *RequestCounter) Snapshot() RequestCounts {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := RequestCounts{Total: c.total, Manifests: c.manifest, Bytes: c.bytes, Blobs: map[string]int{}}
	for k, v := range c.blobs {
		s.Blobs[k] = v
	}
	return s
}

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (w *countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

// MirrorAccess is one line of the mirror's access log.
type MirrorAccess struct {
	Method, Path, UserAgent string
	Status                  int
	Bytes                   int64
}

var accessLine = regexp.MustCompile(`"(GET|HEAD) (\S+) HTTP/[0-9.]+" (\d+) (\d+) "[^"]*" "([^"]*)"`)

// MirrorAccessLog returns the mirror's access-log lines so far whose path contains substr.
func (r *NodeRegistries) MirrorAccessLog(substr string) ([]MirrorAccess, error) {
	f, err := os.Open(r.MirrorLog)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []MirrorAccess
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := accessLine.FindStringSubmatch(sc.Text())
		if m == nil || !strings.Contains(m[2], substr) {
			continue
		}
		status, _ := strconv.Atoi(m[3])
		n, _ := strconv.ParseInt(m[4], 10, 64)
		out = append(out, MirrorAccess{Method: m[1], Path: m[2], Status: status, Bytes: n, UserAgent: m[5]})
	}
	return out, sc.Err()
}
