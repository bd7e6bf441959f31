package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/pullgate/pullgate/pkg/prepull"
	"github.com/pullgate/pullgate/pkg/resolve"
	"github.com/pullgate/pullgate/pkg/warm"
)

type controllerOptions struct {
	prepullFlags
	policyPath      string
	kubeconfig      string
	metricsAddr     string
	healthAddr      string
	leaderElect     bool
	leaderElectID   string
	ownerDeployment string
	startupTaints   bool
	verbosity       int
	reports         bool
	reportInterval  time.Duration
	syncCredentials bool
	warmBackoff     time.Duration
}

func parseController(args []string, stdout, stderr io.Writer) (controllerOptions, error) {
	var o controllerOptions
	fs := newFlags("controller", " --policy FILE [flags]")
	fs.StringVar(&o.policyPath, "policy", "", "policy file (required); reloaded when it changes")
	o.prepullFlags.register(fs)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig (default in-cluster)")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "Prometheus /metrics address; 0 disables")
	fs.StringVar(&o.healthAddr, "health-probe-bind-address", ":8081", "/healthz and /readyz address; 0 disables")
	fs.BoolVar(&o.leaderElect, "leader-elect", true, "elect one active replica through a Lease in --namespace")
	fs.StringVar(&o.leaderElectID, "leader-election-id", "pullgate-controller", "name of the leader election Lease")
	fs.StringVar(&o.ownerDeployment, "owner-deployment", "", "the controller's own Deployment, made owner of the DaemonSets so deleting it (helm uninstall) deletes them")
	fs.BoolVar(&o.startupTaints, "startup-taints", false, "watch Nodes and remove the groups' startup taints (needs get, list, watch and patch on nodes; the chart sets it when a group has startupTaint)")
	fs.IntVar(&o.verbosity, "v", 0, "log verbosity")
	fs.BoolVar(&o.reports, "reports", false, "write openreports.io (else wgpolicyk8s.io) reports of the running pods: changes owed and drift (needs cluster-wide pod and namespace reads)")
	fs.DurationVar(&o.reportInterval, "report-interval", 5*time.Minute, "how often reports are rescanned; changes to pods and namespaces are scanned within seconds")
	fs.DurationVar(&o.warmBackoff, "warm-retry-backoff", warm.DefaultBackoff, "pause before a failed warm's first retry, doubled for each next one (a registry's longer Retry-After wins)")
	fs.BoolVar(&o.syncCredentials, "sync-credentials", false, "copy the policy's syncCredentials into opted-in namespaces (needs list/watch on namespaces and get, create, update, delete on those Secrets; the chart sets it when the policy lists some)")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return o, err
	}
	if o.policyPath == "" {
		return o, badUsage(fs, stderr, "--policy is required")
	}
	if fs.NArg() > 0 {
		return o, badUsage(fs, stderr, fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	if o.warmBackoff < time.Second {
		// Shorter would retry a failing mirror in a hot loop.
		return o, badUsage(fs, stderr, fmt.Sprintf("--warm-retry-backoff %s: must be at least 1s", o.warmBackoff))
	}
	return o, nil
}

// restConfig is the API server's config from a kubeconfig or, without one, in-cluster.
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("loading kubeconfig: %w", err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("in-cluster config (or pass --kubeconfig): %w", err)
	}
	return cfg, nil
}

// runController runs the leader-elected controller: one pre-pull DaemonSet per policy group.
func runController(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseController(args, stdout, stderr)
	if err != nil {
		return err
	}
	logger := newLogger(stderr, o.verbosity)
	ctrllog.SetLogger(logger)
	ctx = ctrllog.IntoContext(ctx, logger)

	cfg, err := restConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	cfg.UserAgent = "pullgate-controller/" + version
	kube, err := kubeClient(o.kubeconfig)
	if err != nil {
		return err
	}
	owned := labels.SelectorFromSet(labels.Set{prepull.ManagedByLabel: prepull.ManagedBy})
	metricsAddr, healthAddr := o.metricsAddr, o.healthAddr
	// Only the controller's own objects, in its own namespace, are cached; and, for the startup
	// taints, each Node's name, labels and taints.
	byObject := map[client.Object]cache.ByObject{
		&appsv1.DaemonSet{}: {Label: owned},
		&corev1.Pod{}:       {Label: owned},
	}
	if o.startupTaints {
		byObject[&corev1.Node{}] = cache.ByObject{Transform: prepull.TrimNode}
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: clientgoscheme.Scheme,
		Cache: cache.Options{
			DefaultNamespaces: map[string]cache.Config{o.namespace: {}},
			ByObject:          byObject,
		},
		Metrics:                       metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:        healthAddr,
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              o.leaderElectID,
		LeaderElectionNamespace:       o.namespace,
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		return fmt.Errorf("controller manager: %w", err)
	}
	if err := prepull.RegisterMetrics(metrics.Registry); err != nil {
		return err
	}
	settings := o.settings()
	if o.ownerDeployment != "" {
		d, err := kube.AppsV1().Deployments(o.namespace).Get(ctx, o.ownerDeployment, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading the owner Deployment %s/%s: %w", o.namespace, o.ownerDeployment, err)
		}
		settings.Owner = &metav1.OwnerReference{APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name, UID: d.UID}
	}
	res, err := resolve.New(resolve.Options{})
	if err != nil {
		return err
	}
	store := &policyStore{path: o.policyPath, log: logger.WithName("policy")}
	reconfig := &reconfigurer{policy: store, secrets: &secrets{client: kube, namespace: o.namespace}, resolver: res, log: logger}
	rec := &prepull.Reconciler{
		Client:   mgr.GetClient(),
		Policy:   store,
		Resolver: res,
		Settings: settings,
		Events:   mgr.GetEventRecorder("pullgate-controller"),
	}
	if err := rec.SetupWithManager(mgr); err != nil {
		return err
	}
	if err := addWarm(mgr, kube, res, store, o.warmBackoff); err != nil {
		return err
	}
	if o.reports {
		if err := addReports(ctx, mgr, cfg, kube, store, res, o.namespace, o.reportInterval, logger); err != nil {
			return err
		}
	}
	if o.syncCredentials {
		if err := addCredentialSync(mgr, kube, store, o.namespace, logger); err != nil {
			return err
		}
	}
	if o.leaderElect {
		if err := mgr.Add(ownLease(kube, o.namespace, o.leaderElectID, settings.Owner)); err != nil {
			return err
		}
	}
	taints, err := addTaints(mgr, o, store, rec, settings, logger)
	if err != nil {
		return err
	}
	store.onChange = func() {
		reconfig.apply(ctx)
		rec.PolicyChanged(ctx)
		taints(ctx)
	}
	if _, err := store.load(); err != nil {
		return err
	}
	if healthAddr != "0" {
		if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
			return err
		}
		if err := mgr.AddReadyzCheck("policy", func(*http.Request) error {
			if store.Current() == nil {
				return errors.New("no policy loaded")
			}
			return nil
		}); err != nil {
			return err
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return mgr.Start(ctx) })
	g.Go(func() error { return store.watch(ctx) })
	g.Go(func() error { reconfig.refresh(ctx, credentialRefresh); return nil })
	logger.Info("Controller starting", "namespace", o.namespace, "policy", o.policyPath, "leaderElection", o.leaderElect, "version", version)
	start := time.Now()
	err = g.Wait()
	logger.Info("Controller stopped", "after", time.Since(start).Round(time.Second).String())
	return err
}
