package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Node is the suite's one real node: containerd + runc with a CNI bridge, the kubelet and
// kube-proxy, beside the controller-manager and scheduler that make Deployments, DaemonSets and
// Services work. It runs in the namespaces Isolated made (see netns.go).
type Node struct {
	Name string
	// Registries are the remote upstream, the authenticated mirror and the infra registry.
	Registries *NodeRegistries
	// Images are the images the harness built and pushed (see images.go).
	Images *NodeImages
	// ContainerdSocket is containerd's gRPC socket (for ctr).
	ContainerdSocket string
	// KubeletLog and ContainerdLog are where those two write.
	KubeletLog, ContainerdLog string

	env *Env
}

const (
	containerdState = "/run/pullgate-e2e/containerd"
	kubeletPort     = "10250"
)

func (e *Env) startNode(ctx context.Context) error {
	n := &Node{Name: NodeName, env: e, ContainerdSocket: containerdState + "/containerd.sock"}
	e.Node = n
	var err error
	if n.Registries, err = e.startNodeRegistries(ctx, NodeRegistryOptions{Link: e.Opts.Link}); err != nil {
		return err
	}
	if n.Images, err = e.pushNodeImages(ctx, n.Registries); err != nil {
		return err
	}
	if err := e.startControllers(ctx); err != nil {
		return err
	}
	if err := n.startContainerd(ctx); err != nil {
		return err
	}
	if err := n.startKubelet(ctx); err != nil {
		return err
	}
	if err := n.startKubeProxy(ctx); err != nil {
		return err
	}
	return n.waitReady(ctx)
}

func (e *Env) startControllers(ctx context.Context) error {
	dir := filepath.Join(e.Dir, "apiserver")
	common := []string{
		"--kubeconfig=" + e.Kubeconfig,
		"--authentication-kubeconfig=" + e.Kubeconfig,
		"--authorization-kubeconfig=" + e.Kubeconfig,
		"--bind-address=127.0.0.1",
		"--leader-elect=false",
	}
	kcm := append([]string{
		"--secure-port=10257",
		"--cert-dir=" + filepath.Join(e.Dir, "kcm"),
		"--service-account-private-key-file=" + filepath.Join(dir, "sa.key"),
		"--root-ca-file=" + filepath.Join(dir, "ca.crt"),
		"--use-service-account-credentials=false",
		"--service-cluster-ip-range=" + ServiceCIDR,
		// Pods of a deleted Deployment go at once; the default waits for the garbage collector's
		// full resync.
		"--concurrent-gc-syncs=5",
	}, common...)
	if _, err := e.startProcess("kube-controller-manager", filepath.Join(e.Dir, "kube-controller-manager.log"),
		filepath.Join(e.Opts.KubeDir, "kube-controller-manager"), kcm...); err != nil {
		return err
	}
	sched := append([]string{"--secure-port=10259", "--cert-dir=" + filepath.Join(e.Dir, "scheduler")}, common...)
	if _, err := e.startProcess("kube-scheduler", filepath.Join(e.Dir, "kube-scheduler.log"),
		filepath.Join(e.Opts.KubeDir, "kube-scheduler"), sched...); err != nil {
		return err
	}
	return nil
}

const containerdConfig = `version = 2
root = %q
state = %q
[grpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  stream_server_address = "127.0.0.1"
  stream_server_port = "10010"
  # This VM withholds CAP_SYS_RESOURCE: a negative oom_score_adj (sandboxes get -998) is EACCES.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = %q
`

// cniConfig: a bridge whose address is the pods' gateway; pods reach the node's address and
// Service IPs through it, and nothing outside the namespace.
const cniConfig = `{"cniVersion": "0.4.0", "name": "pullgate-e2e", "plugins": [
  {"type": "bridge", "bridge": "pg-br0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}}]}
`

func (n *Node) startContainerd(ctx context.Context) error {
	e := n.env
	dir := filepath.Join(e.Dir, "containerd")
	certs := filepath.Join(dir, "certs.d")
	regs := n.Registries
	hosts := map[string]string{
		regs.Mirror: fmt.Sprintf("server = %q\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = %q\n",
			"https://"+regs.Mirror, "https://"+regs.Mirror, regs.MirrorCAFile),
	}
	for _, plain := range []string{regs.Remote, regs.Infra} {
		hosts[plain] = fmt.Sprintf("server = %q\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n",
			"http://"+plain, "http://"+plain)
	}
	for host, toml := range hosts {
		d := filepath.Join(certs, host)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(toml), 0o644); err != nil {
			return err
		}
	}
	cniDir := filepath.Join(e.Dir, "cni")
	if err := os.MkdirAll(filepath.Join(cniDir, "net.d"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cniDir, "net.d", "10-pullgate-e2e.conflist"),
		fmt.Appendf(nil, cniConfig, filepath.Join(cniDir, "ipam"), PodCIDR), 0o644); err != nil {
		return err
	}
	cfg := fmt.Sprintf(containerdConfig, filepath.Join(dir, "root"), containerdState, n.ContainerdSocket,
		filepath.Join(dir, "opt"), n.Images.Pause, e.Opts.CNIBinDir, filepath.Join(cniDir, "net.d"), certs)
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	n.ContainerdLog = filepath.Join(e.Dir, "containerd.log")
	p, err := e.startProcess("containerd", n.ContainerdLog, e.Opts.Containerd, "--config", cfgPath)
	if err != nil {
		return err
	}
	return WaitReady(ctx, p, 30*time.Second, func(ctx context.Context) error {
		_, err := n.Ctr(ctx, "version")
		return err
	})
}

// Ctr runs containerd's ctr against the node's containerd, in the kubelet's namespace (k8s.io).
func (n *Node) Ctr(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"--address", n.ContainerdSocket, "--namespace", "k8s.io"}, args...)
	out, err := exec.CommandContext(ctx, n.env.Opts.Ctr, full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// RemoveImages removes from the node every image whose reference contains substr, with the
// other references the CRI keeps for it (repo@digest, and sha256:<image id>), so its content
// goes and the next pod pulls it again.
func (n *Node) RemoveImages(ctx context.Context, substr string) error {
	// containerd skips fetching a layer whose snapshot exists, and an exited container keeps
	// its snapshots until the kubelet's container GC (once a minute) removes it: remove the
	// exited containers of the image first. Running ones refuse, which is right.
	cs, err := n.Ctr(ctx, "containers", "ls")
	if err != nil {
		return err
	}
	tasks, err := n.Ctr(ctx, "tasks", "ls")
	if err != nil {
		return err
	}
	running := map[string]bool{}
	for _, l := range strings.Split(tasks, "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[2] == "RUNNING" {
			running[f[0]] = true
		}
	}
	for _, l := range strings.Split(cs, "\n") {
		if f := strings.Fields(l); len(f) > 1 && strings.Contains(f[1], substr) && !running[f[0]] {
			if _, err := n.Ctr(ctx, "containers", "rm", f[0]); err != nil {
				return err
			}
		}
	}
	out, err := n.Ctr(ctx, "images", "ls")
	if err != nil {
		return err
	}
	// Columns: REF TYPE DIGEST SIZE PLATFORMS LABELS; every reference of one image shares DIGEST.
	digests := map[string]bool{}
	lines := strings.Split(out, "\n")
	for _, l := range lines {
		if f := strings.Fields(l); len(f) > 2 && strings.Contains(f[0], substr) {
			digests[f[2]] = true
		}
	}
	var refs []string
	for _, l := range lines {
		if f := strings.Fields(l); len(f) > 2 && digests[f[2]] {
			refs = append(refs, f[0])
		}
	}
	if len(refs) == 0 {
		return nil
	}
	_, err = n.Ctr(ctx, append([]string{"images", "rm", "--sync"}, refs...)...)
	return err
}

// HasImage reports whether the node holds an image whose reference contains substr.
func (n *Node) HasImage(ctx context.Context, substr string) (bool, error) {
	out, err := n.Ctr(ctx, "images", "ls", "-q")
	if err != nil {
		return false, err
	}
	for _, ref := range strings.Fields(out) {
		if strings.Contains(ref, substr) {
			return true, nil
		}
	}
	return false, nil
}

const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 0.0.0.0
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %q}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://%s
cgroupDriver: cgroupfs
cgroupRoot: /%s
cgroupsPerQOS: true
# This VM has cgroup v1 (deprecated, still supported with this switch).
failCgroupV1: false
failSwapOn: false
# The kubelet only reads these sysctls; the namespace shows it the values it wants.
protectKernelDefaults: true
# kube-proxy owns the namespace's iptables.
makeIPTablesUtilChains: false
resolvConf: %q
serializeImagePulls: false
# Pulled images must stay until a test removes them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
`

func (n *Node) startKubelet(ctx context.Context) error {
	e := n.env
	dir := filepath.Join(e.Dir, "kubelet")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root := os.Getenv(CgroupRootEnv)
	if root == "" {
		return fmt.Errorf("kubelet: %s is not set: run the suite through e2e.Isolated", CgroupRootEnv)
	}
	// The kubelet's cgroup root must exist in every v1 hierarchy (and cgroup2's "unified",
	// which runc uses in hybrid mode); cpuset needs its CPUs and memory nodes copied down.
	hier, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hier {
		if !isDir(h) {
			continue
		}
		d := filepath.Join(h, root)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("kubelet cgroup root: %w", err)
		}
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(h, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(d, f), b, 0o644); err != nil {
					return err
				}
			}
		}
	}
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver "+NodeIP+"\n"), 0o644); err != nil {
		return err
	}
	cfg := fmt.Sprintf(kubeletConfig, filepath.Join(e.Dir, "apiserver", "ca.crt"), n.ContainerdSocket, root, resolv)
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	n.KubeletLog = filepath.Join(e.Dir, "kubelet.log")
	p, err := e.startProcess("kubelet", n.KubeletLog, filepath.Join(e.Opts.KubeDir, "kubelet"),
		"--config="+cfgPath,
		"--kubeconfig="+e.Kubeconfig,
		"--root-dir="+filepath.Join(dir, "root"),
		"--node-ip="+NodeIP,
		"--hostname-override="+NodeName,
		"-v=2",
	)
	if err != nil {
		return err
	}
	return WaitReady(ctx, p, 60*time.Second, func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, "http://127.0.0.1:10248/healthz")
	})
}

const kubeProxyConfig = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: %q}
mode: iptables
clusterCIDR: %q
hostnameOverride: %q
bindAddress: 0.0.0.0
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Zero leaves the kernel's conntrack settings alone: some are not per network namespace.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
`

func (n *Node) startKubeProxy(ctx context.Context) error {
	e := n.env
	cfgPath := filepath.Join(e.Dir, "kube-proxy.yaml")
	cfg := fmt.Sprintf(kubeProxyConfig, e.Kubeconfig, PodCIDR, NodeName)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	p, err := e.startProcess("kube-proxy", filepath.Join(e.Dir, "kube-proxy.log"),
		filepath.Join(e.Opts.KubeDir, "kube-proxy"), "--config="+cfgPath)
	if err != nil {
		return err
	}
	return WaitReady(ctx, p, 60*time.Second, func(ctx context.Context) error {
		return httpOK(ctx, http.DefaultClient, "http://127.0.0.1:10256/healthz")
	})
}

func (n *Node) waitReady(ctx context.Context) error {
	c := n.env.Client
	err := Poll(ctx, 120*time.Second, func(ctx context.Context) (bool, error) {
		node, err := c.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				return cond.Status == corev1.ConditionTrue, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("node %s not Ready: %w; kubelet log:\n%s", n.Name, err, Tail(n.KubeletLog, 30))
	}
	// The controller-manager creates each namespace's default ServiceAccount; pods need it.
	return Poll(ctx, 60*time.Second, func(ctx context.Context) (bool, error) {
		_, err := c.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
}
