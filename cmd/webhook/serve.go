package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	uberzap "go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/pullgate/pullgate/internal/admissionhttp"
	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/resolve"
)

// MutatePath is where the Pod handler is served.
const MutatePath = "/mutate-v1-pod"

// credentialRefresh re-reads credential Secrets so a rotated password takes effect without a
// policy change.
const credentialRefresh = 2 * time.Minute

// stateInterval is how often the resolver's known digests are saved (see --resolver-state): a
// crash loses at most this much of what was learned.
const stateInterval = time.Minute

type serveOptions struct {
	policyPath  string
	certDir     string
	host        string
	port        int
	metricsAddr string
	healthAddr  string
	pprofAddr   string
	kubeconfig  string
	namespace   string
	verbosity   int
	stateFile   string
}

func parseServe(args []string, stdout, stderr io.Writer) (serveOptions, error) {
	o := serveOptions{namespace: os.Getenv("POD_NAMESPACE")}
	fs := newFlags("serve", " --policy FILE --cert-dir DIR [flags]")
	fs.StringVar(&o.policyPath, "policy", "", "policy file (required); reloaded when it changes")
	fs.StringVar(&o.certDir, "cert-dir", "", "directory with tls.crt and tls.key (required); reloaded when they change")
	fs.StringVar(&o.host, "bind-address", "", "address the webhook listens on (default all)")
	fs.IntVar(&o.port, "port", 9443, "webhook HTTPS port")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "Prometheus /metrics address; 0 disables")
	fs.StringVar(&o.healthAddr, "health-probe-bind-address", ":8081", "/healthz and /readyz address; 0 disables")
	fs.StringVar(&o.pprofAddr, "pprof-bind-address", "0", "net/http/pprof address, for profiling; 0 disables")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig; default in-cluster, and without either no namespace labels are read")
	fs.StringVar(&o.namespace, "namespace", o.namespace, "pullgate's own namespace (default $POD_NAMESPACE): never mutated, and where credential secrets live")
	fs.IntVar(&o.verbosity, "v", 0, "log verbosity; 1 logs every admission decision")
	fs.StringVar(&o.stateFile, "resolver-state", "", "file (on a volume that outlives the container, e.g. an emptyDir) where the digests pullgate knows are saved every minute and on shutdown, and read at start, so a restart while a mirror is sick still pins them; empty disables")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return o, err
	}
	if o.policyPath == "" || o.certDir == "" {
		return o, badUsage(fs, stderr, "--policy and --cert-dir are required")
	}
	return o, nil
}

func newLogger(w io.Writer, verbosity int) logr.Logger {
	// zap levels are int8: -v 200 would wrap around to a level above Fatal and silence every
	// line, errors included, and a negative -v would hide the info lines.
	verbosity = min(max(verbosity, 0), 127)
	level := uberzap.NewAtomicLevelAt(zapcore.Level(-verbosity))
	return zap.New(zap.WriteTo(w), zap.Level(level), zap.UseDevMode(false))
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseServe(args, stdout, stderr)
	if err != nil {
		return err
	}
	logger := newLogger(stderr, o.verbosity)
	ctrllog.SetLogger(logger)
	ctx = ctrllog.IntoContext(ctx, logger)

	client, err := kubeClient(o.kubeconfig)
	if err != nil {
		return err
	}
	var nss mutate.NamespaceReader
	var events mutate.Recorder
	sec := &secrets{namespace: o.namespace}
	if client == nil {
		logger.Info("No API server configured (no --kubeconfig, not in a cluster): namespace labels and annotations cannot be read, so rules with namespaceSelector never match and the pullgate.dev/mode label and namespace overrides are ignored")
	} else {
		if nss, err = newNamespaces(ctx, client); err != nil {
			return err
		}
		events = newEventRecorder(ctx, client)
		sec.client = client
	}

	res, err := resolve.New(resolve.Options{})
	if err != nil {
		return err
	}
	store := &policyStore{path: o.policyPath, log: logger.WithName("policy")}
	reconfig := &reconfigurer{policy: store, secrets: sec, resolver: res, log: logger}
	store.onChange = func() { reconfig.apply(ctx) }
	if _, err := store.load(); err != nil {
		return err
	}
	if err := mutate.RegisterMetrics(metrics.Registry); err != nil {
		return err
	}
	handler := mutate.NewHandler(mutate.Handler{Policy: store, Resolver: res, Namespaces: nss, OwnNamespace: o.namespace, Events: events})
	if client != nil {
		// Whether the pull secrets pods get exist; the chart grants get on exactly those names.
		handler.Secrets = newSecretPresence(client)
		// The nodes' platforms (platforms.fromNodes); the informer starts when a policy asks.
		handler.NodePlatforms = newNodePlatforms(ctx, client)
	}
	handler.Platforms = resolve.NewPlatforms(res)

	server := webhook.NewServer(webhook.Options{
		Host:    o.host,
		Port:    o.port,
		CertDir: o.certDir,
		TLSOpts: []func(*tls.Config){hardenTLS},
	})
	server.Register(MutatePath, &admissionhttp.Webhook{Handler: handler, Log: logger.WithName("admission")})

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return server.Start(ctx) })
	g.Go(func() error { return store.watch(ctx) })
	g.Go(func() error { reconfig.refresh(ctx, credentialRefresh); return nil })
	if o.stateFile != "" {
		// After the policy is applied: its cacheTTL and maxStale decide what is worth loading.
		g.Go(func() error { res.PersistState(ctx, o.stateFile, stateInterval); return nil })
	}
	if o.metricsAddr != "0" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}))
		g.Go(func() error { return serveHTTP(ctx, o.metricsAddr, mux) })
	}
	if o.healthAddr != "0" {
		g.Go(func() error { return serveHTTP(ctx, o.healthAddr, healthMux(store, server)) })
	}
	if o.pprofAddr != "0" {
		g.Go(func() error { return serveHTTP(ctx, o.pprofAddr, pprofMux()) })
	}
	logger.Info("Serving", "port", o.port, "path", MutatePath, "policy", o.policyPath, "version", version)
	return g.Wait()
}

// hardenTLS sets TLS 1.2 as the floor and turns HTTP/2 off: HTTP/2's rapid-reset and stream
// floods (CVE-2023-44487) are not worth it for a webhook the API server calls over HTTP/1.1.
func hardenTLS(c *tls.Config) {
	c.MinVersion = tls.VersionTLS12
	c.NextProtos = []string{"http/1.1"}
}

// kubeClient returns nil, nil when there is no API server to talk to.
func kubeClient(kubeconfig string) (kubernetes.Interface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("loading kubeconfig: %w", err)
		}
	} else if cfg, err = rest.InClusterConfig(); errors.Is(err, rest.ErrNotInCluster) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("in-cluster config: %w", err)
	}
	cfg.UserAgent = "pullgate/" + version
	return kubernetes.NewForConfig(cfg)
}

func healthMux(store *policyStore, server webhook.Server) *http.ServeMux {
	started := server.StartedChecker()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if store.Current() == nil {
			http.Error(w, "no policy loaded", http.StatusServiceUnavailable)
			return
		}
		if err := started(r); err != nil {
			http.Error(w, "webhook listener not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	return mux
}

// pprofMux serves the runtime profiles on their usual paths. Off unless asked for: a profile
// reveals the process's internals and costs CPU while it runs.
func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// serveHTTP runs a plain HTTP server until ctx ends.
func serveHTTP(ctx context.Context, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		// ctx is done; the shutdown gets its own few seconds (and keeps ctx's logger).
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
