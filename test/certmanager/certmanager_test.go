package certmanager

import (
	"context"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cert-manager/cert-manager/pkg/controller"
)

func TestCRDs(t *testing.T) {
	t.Parallel()
	dir, err := CRDDir(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	crds, err := CRDs(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range crds {
		names = append(names, c.Name)
	}
	// The chart needs these; the cainjector watches Certificates.
	for _, want := range []string{"certificates.cert-manager.io", "certificaterequests.cert-manager.io", "issuers.cert-manager.io", "clusterissuers.cert-manager.io"} {
		if !slices.Contains(names, want) {
			t.Errorf("CRD %s missing from %s (have %v)", want, dir, names)
		}
	}
}

// TestControllersRegistered: every controller Run starts is linked in, so a cert-manager upgrade
// that renames or drops one fails here rather than at Run time.
func TestControllersRegistered(t *testing.T) {
	t.Parallel()
	for _, name := range Controllers {
		if _, ok := controller.Known()[name]; !ok {
			t.Errorf("controller %q not registered", name)
		}
	}
}

func TestWriteKubeconfig(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]*rest.Config{
		"client cert": {Host: "https://127.0.0.1:6443", TLSClientConfig: rest.TLSClientConfig{CAData: []byte("ca"), CertData: []byte("cert"), KeyData: []byte("key")}},
		"token":       {Host: "https://127.0.0.1:6443", BearerToken: "secret", TLSClientConfig: rest.TLSClientConfig{Insecure: true}},
	} {
		path := filepath.Join(t.TempDir(), "kubeconfig")
		if err := WriteKubeconfig(cfg, path); err != nil {
			t.Fatal(err)
		}
		got, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got.Host != cfg.Host || string(got.CAData) != string(cfg.CAData) || string(got.CertData) != string(cfg.CertData) ||
			string(got.KeyData) != string(cfg.KeyData) || got.BearerToken != cfg.BearerToken || got.Insecure != cfg.Insecure {
			t.Errorf("%s: round trip gave %+v", name, got)
		}
	}
}

// TestRunWithoutAPIServer: Run against an API server that is not there returns (an error, or nil
// once its context ends) instead of hanging in cache syncs.
func TestRunWithoutAPIServer(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Run(ctx, &rest.Config{Host: "http://" + addr}, logr.Discard()) }()
	select {
	case err := <-done:
		t.Logf("Run returned %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}
