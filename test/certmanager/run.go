package certmanager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"golang.org/x/sync/errgroup"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	ctrl "sigs.k8s.io/controller-runtime"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/cert-manager/cert-manager/pkg/controller"
	"github.com/cert-manager/cert-manager/pkg/controller/cainjector"

	// Each controller package registers itself in controller.Known() from init.
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"

	// The issuers controller checks an Issuer's setup through these implementations.
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

// Controllers are the cert-manager controllers Run starts: enough for self-signed and CA
// Issuers/ClusterIssuers to issue and renew Certificates. ACME, Vault, Venafi and the
// ingress/gateway shims are left out.
var Controllers = []string{
	"issuers", "clusterissuers",
	"certificaterequests-approver", "certificaterequests-issuer-ca", "certificaterequests-issuer-selfsigned",
	"certificates-trigger", "certificates-key-manager", "certificates-request-manager",
	"certificates-issuing", "certificates-readiness", "certificates-revision-manager",
}

// ClusterResourceNamespace is where ClusterIssuers keep their Secrets, as cert-manager's
// --cluster-resource-namespace.
const ClusterResourceNamespace = "cert-manager"

// Run runs the controllers and the cainjector until ctx is done. It returns nil after a clean
// stop, or the first error of any component. The cert-manager CRDs must be installed (ApplyCRDs).
func Run(ctx context.Context, cfg *rest.Config, log logr.Logger) error {
	ctx = logr.NewContext(ctx, log)

	// cert-manager builds its clients from a kubeconfig file, never from a rest.Config.
	dir, err := os.MkdirTemp("", "certmanager-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := WriteKubeconfig(cfg, kubeconfig); err != nil {
		return err
	}
	factory, err := controller.NewContextFactory(ctx, controller.ContextOptions{
		Kubeconfig:         kubeconfig,
		KubernetesAPIQPS:   50,
		KubernetesAPIBurst: 100,
		IssuerOptions:      controller.IssuerOptions{ClusterResourceNamespace: ClusterResourceNamespace},
	})
	if err != nil {
		return fmt.Errorf("cert-manager context: %w", err)
	}
	// Build everything before starting anything, so a setup error leaves nothing running.
	var controllers []controller.Interface
	for _, name := range Controllers {
		newController, ok := controller.Known()[name]
		if !ok {
			return fmt.Errorf("cert-manager controller %q is not registered", name)
		}
		c, err := newController(factory)
		if err != nil {
			return fmt.Errorf("cert-manager controller %s: %w", name, err)
		}
		controllers = append(controllers, c)
	}
	shared, err := factory.Build()
	if err != nil {
		return err
	}
	injector, err := newCAInjector(ctx, cfg, log)
	if err != nil {
		return err
	}

	g, ctx := errgroup.WithContext(ctx)
	for _, c := range controllers {
		g.Go(func() error { return c.Run(2, ctx) })
	}
	g.Go(func() error { return injector.Start(ctx) })
	shared.SharedInformerFactory.Start(ctx.Done())
	shared.KubeSharedInformerFactory.Start(ctx.Done())
	shared.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())

	err = g.Wait()
	shared.HTTP01ResourceMetadataInformersFactory.Shutdown()
	shared.KubeSharedInformerFactory.Shutdown()
	shared.SharedInformerFactory.Shutdown()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// newCAInjector sets up cert-manager's cainjector for webhook configurations, reading CAs from
// Certificates (cert-manager.io/inject-ca-from) and Secrets (inject-ca-from-secret).
func newCAInjector(ctx context.Context, cfg *rest.Config, log logr.Logger) (ctrl.Manager, error) {
	scheme := runtime.NewScheme()
	utilruntime.Must(corev1.AddToScheme(scheme))
	utilruntime.Must(admissionv1.AddToScheme(scheme))
	utilruntime.Must(cmapi.AddToScheme(scheme))
	cfg = rest.CopyConfig(cfg)
	// The injector server-side-applies caBundle with the user agent's prefix as field manager;
	// without a user agent the API server rejects the apply (fieldManager: Required value).
	cfg.UserAgent = "cert-manager-cainjector/pullgate-test"
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Logger:                 log.WithName("cainjector"),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
	})
	if err != nil {
		return nil, fmt.Errorf("cainjector manager: %w", err)
	}
	err = cainjector.RegisterAllInjectors(ctx, mgr, cainjector.SetupOptions{
		EnableCertificatesDataSource: true,
		EnabledReconcilersFor: map[string]bool{
			cainjector.MutatingWebhookConfigurationName:   true,
			cainjector.ValidatingWebhookConfigurationName: true,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("cainjector: %w", err)
	}
	return mgr, nil
}

// WriteKubeconfig writes cfg's server and credentials as a kubeconfig file.
func WriteKubeconfig(cfg *rest.Config, path string) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{
		Server:                   cfg.Host,
		CertificateAuthority:     cfg.CAFile,
		CertificateAuthorityData: cfg.CAData,
		InsecureSkipTLSVerify:    cfg.Insecure,
		TLSServerName:            cfg.ServerName,
	}
	kc.AuthInfos["u"] = &clientcmdapi.AuthInfo{
		ClientCertificate:     cfg.CertFile,
		ClientCertificateData: cfg.CertData,
		ClientKey:             cfg.KeyFile,
		ClientKeyData:         cfg.KeyData,
		Token:                 cfg.BearerToken,
		TokenFile:             cfg.BearerTokenFile,
		Username:              cfg.Username,
		Password:              cfg.Password,
	}
	kc.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	kc.CurrentContext = "c"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

var setLoggerOnce sync.Once

// Start installs the CRDs and runs cert-manager (Run) in the background, logging to logPath.
// stop ends it and returns Run's error, or an error if it did not stop within 30 seconds.
func Start(ctx context.Context, cfg *rest.Config, logPath string) (stop func() error, err error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	var mu sync.Mutex
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(f, prefix, args)
	}, funcr.Options{Verbosity: 1})
	// controller-runtime's global logger (the cainjector registers through it) complains on
	// stderr until it is set.
	setLoggerOnce.Do(func() { ctrllog.SetLogger(log) })
	if err := ApplyCRDs(ctx, cfg); err != nil {
		f.Close()
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- Run(runCtx, cfg, log) }()
	return func() error {
		defer f.Close()
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("cert-manager did not stop within 30s")
		}
	}, nil
}
