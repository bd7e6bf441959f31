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
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KubeVersion is the version hack/kube-binaries.sh builds by default.
const KubeVersion = "v1.37.2"

// Options says where the binaries are and where logs go. OptionsFromEnv fills it the way
// hack/e2e.sh expects.
type Options struct {
	// KubeDir holds kube-apiserver and, optionally, kubectl.
	KubeDir string
	// Etcd, Registry and Webhook are the etcd, docker-registry (Distribution) and pullgate binaries.
	Etcd, Registry, Webhook string
	// Dir receives every log and data directory. Empty: a new temporary directory.
	Dir string
	// Keep keeps Dir even when the suite passes.
	Keep bool

	// Node also starts a real node (see node.go); the process must run under Isolated.
	Node bool
	// Link shapes the path to the node suite's remote upstream (zero: unthrottled).
	Link LinkOptions
	// MirrorRegistry is the Distribution binary of the node's mirror (default: Registry).
	MirrorRegistry string
	// Containerd and Ctr are containerd's daemon and client; CNIBinDir holds the CNI plugins.
	Containerd, Ctr, CNIBinDir string
	// Pause is the sandbox binary (test/e2e/pause) and Busybox a static busybox for test images.
	Pause, Busybox string
	// PullgateImage is the OCI layout `make image` writes; Helm is the helm binary.
	PullgateImage, Helm string
}

// OptionsFromEnv reads PULLGATE_E2E_{KUBE_DIR,ETCD,REGISTRY,WEBHOOK,ARTIFACTS,KEEP}, falling back
// to KUBEBUILDER_ASSETS, the hack/kube-binaries.sh cache, $PATH and ../bin/webhook of the root
// module. It reports every binary it cannot find.
func OptionsFromEnv() (Options, error) {
	o := Options{
		KubeDir:  os.Getenv("PULLGATE_E2E_KUBE_DIR"),
		Etcd:     os.Getenv("PULLGATE_E2E_ETCD"),
		Registry: os.Getenv("PULLGATE_E2E_REGISTRY"),
		Webhook:  os.Getenv("PULLGATE_E2E_WEBHOOK"),
		Dir:      os.Getenv("PULLGATE_E2E_ARTIFACTS"),
		Keep:     os.Getenv("PULLGATE_E2E_KEEP") != "",
	}
	if o.KubeDir == "" {
		o.KubeDir = os.Getenv("KUBEBUILDER_ASSETS")
	}
	if o.KubeDir == "" {
		cache := os.Getenv("PULLGATE_CACHE")
		if cache == "" {
			base, err := os.UserCacheDir()
			if err == nil {
				cache = filepath.Join(base, "pullgate")
			}
		}
		o.KubeDir = filepath.Join(cache, "kube", KubeVersion)
	}
	lookPath := func(p *string, name string) {
		if *p == "" {
			if found, err := exec.LookPath(name); err == nil {
				*p = found
			}
		}
	}
	lookPath(&o.Etcd, "etcd")
	lookPath(&o.Registry, "docker-registry")
	o.Containerd, o.Pause = os.Getenv("PULLGATE_E2E_CONTAINERD"), os.Getenv("PULLGATE_E2E_PAUSE")
	o.Busybox, o.PullgateImage = os.Getenv("PULLGATE_E2E_BUSYBOX"), os.Getenv("PULLGATE_E2E_IMAGE")
	o.Helm, o.CNIBinDir = os.Getenv("PULLGATE_E2E_HELM"), os.Getenv("PULLGATE_E2E_CNI_BIN_DIR")
	o.MirrorRegistry = os.Getenv("PULLGATE_E2E_MIRROR_REGISTRY")
	lookPath(&o.Containerd, "containerd")
	lookPath(&o.Ctr, "ctr")
	lookPath(&o.Busybox, "busybox")
	if o.CNIBinDir == "" {
		o.CNIBinDir = "/usr/lib/cni"
	}
	if o.Webhook == "" {
		if root, err := moduleRoot(); err == nil {
			o.Webhook = filepath.Join(root, "bin", "webhook")
		}
	}

	return o, checkBinaries("missing binaries", []binary{
		{"kube-apiserver", filepath.Join(o.KubeDir, "kube-apiserver"), "run hack/kube-binaries.sh or set PULLGATE_E2E_KUBE_DIR"},
		{"etcd", o.Etcd, "apt-get install etcd-server or set PULLGATE_E2E_ETCD"},
		{"docker-registry", o.Registry, "apt-get install docker-registry or set PULLGATE_E2E_REGISTRY"},
		{"webhook", o.Webhook, "make build or set PULLGATE_E2E_WEBHOOK"},
	})
}

type binary struct{ what, path, hint string }

// checkBinaries reports every binary of bins that is not an executable file, with its hint.
func checkBinaries(title string, bins []binary) error {
	var missing []string
	for _, b := range bins {
		if b.path == "" || !isExecutable(b.path) {
			missing = append(missing, fmt.Sprintf("%s (%q): %s", b.what, b.path, b.hint))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%s:\n  %s", title, strings.Join(missing, "\n  "))
	}
	return nil
}

// NodeOptionsFromEnv is OptionsFromEnv with Node set, checking the node's binaries too.
func NodeOptionsFromEnv() (Options, error) {
	o, err := OptionsFromEnv()
	if err != nil {
		return o, err
	}
	o.Node = true
	if o.MirrorRegistry == "" {
		o.MirrorRegistry = o.Registry
	}
	return o, checkBinaries("missing for the node", []binary{
		{"kubelet", filepath.Join(o.KubeDir, "kubelet"), "run hack/kube-binaries.sh"},
		{"kube-controller-manager", filepath.Join(o.KubeDir, "kube-controller-manager"), "run hack/kube-binaries.sh"},
		{"kube-scheduler", filepath.Join(o.KubeDir, "kube-scheduler"), "run hack/kube-binaries.sh"},
		{"kube-proxy", filepath.Join(o.KubeDir, "kube-proxy"), "run hack/kube-binaries.sh"},
		{"containerd", o.Containerd, "apt-get install containerd runc"},
		{"ctr", o.Ctr, "apt-get install containerd"},
		{"bridge CNI plugin", filepath.Join(o.CNIBinDir, "bridge"), "apt-get install containernetworking-plugins"},
		{"busybox", o.Busybox, "apt-get install busybox-static"},
		{"mirror registry", o.MirrorRegistry, "hack/registry-v3.sh, or set PULLGATE_E2E_MIRROR_REGISTRY"},
		{"pause", o.Pause, "go build -o PATH ./e2e/pause (in test/) and set PULLGATE_E2E_PAUSE"},
	})
}

// moduleRoot finds the root module (github.com/pullgate/pullgate) above the working directory;
// `go test` runs in the package directory, test/e2e.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("getwd: %w", err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/pullgate/pullgate\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("root module github.com/pullgate/pullgate not found above the working directory")
		}
		dir = parent
	}
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

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

func (e *Env) startEtcd(ctx context.Context) (string, error) {
	var clientURL string
	_, err := startWithPorts(func() (*Process, error) {
		ports, err := FreePorts(2)
		if err != nil {
			return nil, err
		}
		clientURL = "http://127.0.0.1:" + strconv.Itoa(ports[0])
		peerURL := "http://127.0.0.1:" + strconv.Itoa(ports[1])
		data := filepath.Join(e.Dir, "etcd-data")
		_ = os.RemoveAll(data)
		p, err := e.startProcess("etcd", filepath.Join(e.Dir, "etcd.log"), e.Opts.Etcd,
			"--name=e2e",
			"--data-dir="+data,
			"--listen-client-urls="+clientURL,
			"--advertise-client-urls="+clientURL,
			"--listen-peer-urls="+peerURL,
			"--initial-advertise-peer-urls="+peerURL,
			"--initial-cluster=e2e="+peerURL,
			"--logger=zap",
			"--log-outputs=stderr",
		)
		if err != nil {
			return nil, err
		}
		err = WaitReady(ctx, p, 30*time.Second, func(ctx context.Context) error {
			return httpOK(ctx, http.DefaultClient, clientURL+"/health")
		})
		if err != nil {
			p.Stop(5 * time.Second)
			return nil, err
		}
		return p, nil
	})
	if err != nil {
		return "", fmt.Errorf("etcd: %w", err)
	}
	return clientURL, nil
}

func (e *Env) startAPIServer(ctx context.Context, etcdURL string) error {
	dir := filepath.Join(e.Dir, "apiserver")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	ca, err := NewCA("pullgate-e2e-apiserver-ca")
	if err != nil {
		return err
	}
	serving, err := ca.Serving("kube-apiserver",
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 0, 0, 1), net.ParseIP(NodeIP), net.ParseIP("10.96.0.1")})
	if err != nil {
		return err
	}
	if err := serving.WriteFiles(dir, "serving.crt", "serving.key"); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca.CertPEM, 0o644); err != nil {
		return fmt.Errorf("write apiserver CA: %w", err)
	}
	if err := serviceAccountKey(filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")); err != nil {
		return err
	}
	admin, err := ca.Client("e2e-admin", "system:masters")
	if err != nil {
		return err
	}
	// The same identity authenticates the API server to the kubelet (logs, exec).
	if err := admin.WriteFiles(dir, "kubelet-client.crt", "kubelet-client.key"); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "audit-policy.yaml"), []byte(auditPolicy), 0o644); err != nil {
		return fmt.Errorf("write audit policy: %w", err)
	}
	e.AuditLog = filepath.Join(e.Dir, "audit.log")
	e.APIServerLog = filepath.Join(e.Dir, "kube-apiserver.log")

	var host string
	_, err = startWithPorts(func() (*Process, error) {
		ports, err := FreePorts(1)
		if err != nil {
			return nil, err
		}
		host = "https://127.0.0.1:" + strconv.Itoa(ports[0])
		args := []string{
			"--etcd-servers=" + etcdURL,
			"--secure-port=" + strconv.Itoa(ports[0]),
			"--cert-dir=" + dir,
			"--tls-cert-file=" + filepath.Join(dir, "serving.crt"),
			"--tls-private-key-file=" + filepath.Join(dir, "serving.key"),
			"--client-ca-file=" + filepath.Join(dir, "ca.crt"),
			"--authorization-mode=RBAC",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + filepath.Join(dir, "sa.pub"),
			"--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
			"--allow-privileged=true",
			"--audit-policy-file=" + filepath.Join(dir, "audit-policy.yaml"),
			"--audit-log-path=" + e.AuditLog,
		}
		if e.Opts.Node {
			// Pods reach the API server through the kubernetes Service, whose endpoint is the
			// node's address; the API server reaches the kubelet and webhooks' Services too.
			args = append(args,
				"--bind-address=0.0.0.0",
				"--advertise-address="+NodeIP,
				"--service-cluster-ip-range="+ServiceCIDR,
				"--kubelet-preferred-address-types=InternalIP",
				"--kubelet-client-certificate="+filepath.Join(dir, "kubelet-client.crt"),
				"--kubelet-client-key="+filepath.Join(dir, "kubelet-client.key"),
			)
		} else {
			args = append(args,
				"--bind-address=127.0.0.1",
				"--advertise-address=127.0.0.1",
				"--service-cluster-ip-range=10.0.0.0/24",
				// No controller-manager: nothing reconciles endpoints or creates the default
				// ServiceAccount of a namespace (what envtest does as well).
				"--endpoint-reconciler-type=none",
				"--disable-admission-plugins=ServiceAccount",
			)
		}
		p, err := e.startProcess("kube-apiserver", e.APIServerLog, filepath.Join(e.Opts.KubeDir, "kube-apiserver"), args...)
		if err != nil {
			return nil, err
		}
		cfg := &rest.Config{
			Host: host,
			TLSClientConfig: rest.TLSClientConfig{
				CAData: ca.CertPEM, CertData: admin.CertPEM, KeyData: admin.KeyPEM,
			},
		}
		hc, err := rest.HTTPClientFor(cfg)
		if err != nil {
			p.Stop(5 * time.Second)
			return nil, fmt.Errorf("apiserver client: %w", err)
		}
		err = WaitReady(ctx, p, 60*time.Second, func(ctx context.Context) error {
			return httpOK(ctx, hc, host+"/readyz")
		})
		if err != nil {
			p.Stop(5 * time.Second)
			return nil, err
		}
		return p, nil
	})
	if err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}

	e.Config = &rest.Config{
		Host: host,
		TLSClientConfig: rest.TLSClientConfig{
			CAData: ca.CertPEM, CertData: admin.CertPEM, KeyData: admin.KeyPEM,
		},
		// Polling loops issue many requests; the default 5 QPS would make them the bottleneck.
		QPS:   200,
		Burst: 400,
		// Warnings of the shared client are expected noise (audit mode); tests that assert on
		// them use ClientWithWarnings.
		WarningHandler: rest.NoWarnings{},
	}
	if e.Client, err = kubernetes.NewForConfig(e.Config); err != nil {
		return fmt.Errorf("clientset: %w", err)
	}
	e.Kubeconfig = filepath.Join(e.Dir, "kubeconfig")
	kc := clientcmdapi.NewConfig()
	kc.Clusters["e2e"] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: ca.CertPEM}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: admin.CertPEM, ClientKeyData: admin.KeyPEM}
	kc.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: "admin"}
	kc.CurrentContext = "e2e"
	if err := clientcmd.WriteToFile(*kc, e.Kubeconfig); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}

	// /readyz does not wait for the system namespaces; tests use kube-system.
	return Poll(ctx, 30*time.Second, func(ctx context.Context) (bool, error) {
		_, err := e.Client.CoreV1().Namespaces().Get(ctx, metav1.NamespaceSystem, metav1.GetOptions{})
		return err == nil, nil
	})
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
