package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Env is one control plane and one pair of registries, shared by the tests of a suite. Tests
// isolate themselves with a Scope (own namespaces and webhook configurations).
type Env struct {
	Opts Options
	// Dir holds the logs and data of everything the harness started.
	Dir string

	// Config is an admin (system:masters) client configuration; Client is built from it.
	Config *rest.Config
	Client kubernetes.Interface
	// Kubeconfig is the same admin identity as a file, for the webhook and kubectl.
	Kubeconfig string

	// Upstream is host:port of the registry images are pushed to. Mirror is host:port of the
	// Distribution pull-through cache in front of it. Both speak plain HTTP.
	Upstream string
	Mirror   string

	// WebhookCA signs webhook serving certificates; its PEM is the caBundle.
	WebhookCA *CA

	// Node is the real node, when Options.Node is set.
	Node *Node

	// AuditLog is the API server's audit log (JSON lines, Metadata level for pods), where the
	// annotations pullgate sets on admission end up.
	AuditLog string
	// APIServerLog is the API server's own log (klog), where it reports failed webhook calls.
	APIServerLog string

	mu        sync.Mutex
	procs     []*Process
	closers   []func()
	failed    atomic.Bool
	closeOnce sync.Once
}

// Start brings up etcd, kube-apiserver, the upstream registry and the mirror. On error it tears
// down whatever it had started. Call Close when done.
func Start(ctx context.Context, opts Options) (_ *Env, err error) {
	e := &Env{Opts: opts, Dir: opts.Dir}
	if e.Dir == "" {
		if e.Dir, err = os.MkdirTemp("", "pullgate-e2e-"); err != nil {
			return nil, fmt.Errorf("create artifacts dir: %w", err)
		}
	} else if err := os.MkdirAll(e.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create artifacts dir: %w", err)
	}
	defer func() {
		if err != nil {
			e.MarkFailed()
			e.Close()
		}
	}()

	if e.WebhookCA, err = NewCA("pullgate-e2e-webhook-ca"); err != nil {
		return nil, err
	}
	if opts.Node && !InNodeNamespace() {
		return nil, errors.New("a node needs the namespaces e2e.Isolated creates: run the suite through it")
	}
	etcdURL, err := e.startEtcd(ctx)
	if err != nil {
		return nil, err
	}
	if !opts.Node {
		if err := e.startRegistries(ctx); err != nil {
			return nil, err
		}
	}
	if err := e.startAPIServer(ctx, etcdURL); err != nil {
		return nil, err
	}
	if opts.Node {
		if err := e.startNode(ctx); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// StopOnInterrupt closes the Env and exits 130 when ctx ends before the returned function is
// called: an interrupt does not run deferred calls, and nothing the suite started may outlive it.
// (Pdeathsig covers a crash or a -timeout panic.)
func (e *Env) StopOnInterrupt(ctx context.Context) (finished func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			fmt.Fprintln(os.Stderr, "e2e: interrupted, stopping everything")
			e.MarkFailed()
			e.Close()
			os.Exit(130)
		case <-done:
		}
	}()
	return func() { close(done) }
}

// MarkFailed keeps Dir on Close. TestMain calls it when a test failed.
func (e *Env) MarkFailed() { e.failed.Store(true) }

// Close stops every process and server the Env started, in reverse order, and removes Dir unless
// the suite failed or Options.Keep is set. It is idempotent; a second caller (an interrupt racing
// the end of the suite) waits for the first to finish.
func (e *Env) Close() { e.closeOnce.Do(e.close) }

func (e *Env) close() {
	e.mu.Lock()
	procs, closers := e.procs, e.closers
	e.procs, e.closers = nil, nil
	e.mu.Unlock()
	for i := len(closers) - 1; i >= 0; i-- {
		closers[i]()
	}
	began := time.Now()
	// In reverse start order, one at a time: the API server must go before etcd, or it spends
	// its shutdown retrying a store that is gone.
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Stop(10 * time.Second)
	}
	fmt.Fprintf(os.Stderr, "e2e: stopped %d processes in %s\n", len(procs), time.Since(began).Round(time.Millisecond))
	if e.failed.Load() || e.Opts.Keep {
		fmt.Fprintf(os.Stderr, "e2e: logs kept in %s\n", e.Dir)
		return
	}
	_ = os.RemoveAll(e.Dir)
}

// track registers p for Close.
func (e *Env) track(p *Process) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.procs = append(e.procs, p)
}

func (e *Env) onClose(f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closers = append(e.closers, f)
}

// startProcess starts a binary under the Env, logging to Dir/<logName>.
func (e *Env) startProcess(name, logPath, bin string, args ...string) (*Process, error) {
	p, err := start(name, logPath, nil, bin, args...)
	if err != nil {
		return nil, err
	}
	e.track(p)
	return p, nil
}

// startWithPorts retries attempt, up to three times, when it lost a race for a free port with
// another process on the machine: its error (which quotes the log tail) says the address was
// already in use. attempt picks new ports each time.
func startWithPorts(attempt func() (*Process, error)) (*Process, error) {
	var lastErr error
	for i := 0; i < 3; i++ {
		p, err := attempt()
		if err == nil {
			return p, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, lastErr
}

// FreePorts returns n distinct loopback ports that were free a moment ago. Another process can
// take one before the caller binds it; starters retry on "address already in use".
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// WaitReady polls check until it succeeds, the process exits or timeout passes. The error names
// the process and ends with the tail of its log.
func WaitReady(parent context.Context, p *Process, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	var last error
	for {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		last = check(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("%s: %w (%w); last lines of %s:\n%s", p.Name, errExited, p.Err(), p.LogPath, Tail(p.LogPath, 30))
		case <-ctx.Done():
			if parent.Err() != nil {
				return fmt.Errorf("waiting for %s: %w", p.Name, parent.Err())
			}
			return fmt.Errorf("%s not ready after %s: %w; last lines of %s:\n%s", p.Name, timeout, last, p.LogPath, Tail(p.LogPath, 30))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Poll calls cond every 100ms until it returns true or an error, or timeout passes.
func Poll(parent context.Context, timeout time.Duration, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	for {
		ok, err := cond(ctx)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			if parent.Err() != nil {
				return fmt.Errorf("condition not met: %w", parent.Err())
			}
			return fmt.Errorf("condition not met after %s: %w", timeout, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func httpOK(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// tlsOK dials addr and verifies its certificate against caPEM for the name 127.0.0.1.
func tlsOK(ctx context.Context, addr string, caPEM []byte) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	d := tls.Dialer{Config: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("TLS dial %s: %w", addr, err)
	}
	return conn.Close()
}

// Tail returns the last n lines of a file, for failure messages.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestDir is a per-test directory under Dir for a test's logs and files.
func (e *Env) TestDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(e.Dir, "tests", sanitize(t.Name(), 200, '_'))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("create test dir: %v", err)
	}
	return dir
}

// sanitize keeps [a-z0-9], maps everything else to sep, lowercases and truncates.
func sanitize(s string, limit int, sep rune) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteRune(sep)
		}
	}
	out := strings.Trim(b.String(), string(sep))
	if len(out) > limit {
		out = strings.Trim(out[:limit], string(sep))
	}
	return out
}
