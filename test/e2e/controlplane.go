package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// startEtcd starts etcd on loopback and returns its client URL.
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
