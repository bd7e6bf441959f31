package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
