package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The node suite runs in namespaces of its own, so a real kubelet, containerd, kube-proxy and
// CNI bridge can run here without changing the machine: a network namespace (the node's address,
// pod bridge, Service rules and sysctls are ours), a mount namespace (tmpfs over /run, /var/log
// and /var/lib/cni, the sysctl files the kubelet insists on, every container mount) and a PID
// namespace whose init is this binary, so its exit kills everything started inside.
//
// Isolated re-executes the binary twice: the host stage creates the namespaces and cleans the
// kubelet's cgroups afterwards; the init stage (PID 1) prepares the namespace, runs the real main
// as its child and reaps orphans (containerd shims are reparented to it).

const (
	stageEnv = "PULLGATE_E2E_STAGE"
	// CgroupRootEnv names the cgroup, in every hierarchy, under which the kubelet puts all pods.
	CgroupRootEnv = "PULLGATE_E2E_CGROUP_ROOT"

	// NodeIP is the node's address inside the suite's network namespace: the kubelet's node IP,
	// the API server's advertised address and where the registries listen for the node and pods.
	NodeIP = "10.200.0.1"
	// PodCIDR is the CNI bridge's subnet; its first address is the pods' gateway.
	PodCIDR = "10.244.0.0/24"
	// ServiceCIDR is the Service ClusterIP range; kube-proxy programs it in the namespace.
	ServiceCIDR = "10.96.0.0/24"
	// NodeName is the hostname inside the namespace and so the Node's name.
	NodeName = "pullgate-e2e-node"

	nodeIface = "pg0"
)

// InNodeNamespace reports whether this process runs in the namespaces Isolated creates.
func InNodeNamespace() bool { return os.Getenv(stageEnv) == "run" }

// Isolated runs main inside the node namespaces and returns its exit code. It needs root.
func Isolated(main func() int) int {
	switch os.Getenv(stageEnv) {
	case "":
		return hostStage()
	case "init":
		return initStage()
	default:
		return main()
	}
}

func hostStage() int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: the node suite needs root: it creates network, mount and PID namespaces and a cgroup for the kubelet")
		return 1
	}
	cgroupRoot := "pullgate-e2e-" + strconv.Itoa(os.Getpid())
	// containerd's CNI library keeps its cache there; the init stage mounts a tmpfs on it.
	createdCNI := false
	if _, err := os.Stat("/var/lib/cni"); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll("/var/lib/cni", 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
			return 1
		}
		createdCNI = true
	}
	defer func() {
		removeCgroups(cgroupRoot)
		if createdCNI {
			_ = os.Remove("/var/lib/cni")
		}
	}()

	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), stageEnv+"=init", CgroupRootEnv+"="+cgroupRoot)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWNET | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS,
		Pdeathsig:  syscall.SIGKILL,
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: create the node namespaces: %v\n", err)
		return 1
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	err := cmd.Wait()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		if code := exit.ExitCode(); code >= 0 {
			return code
		}
		return 1
	default:
		fmt.Fprintf(os.Stderr, "e2e: node namespace: %v\n", err)
		return 1
	}
}

// removeCgroups removes the kubelet's cgroup tree, deepest first, in every hierarchy. The
// processes in it died with the PID namespace; the kernel may take a moment to empty them.
func removeCgroups(root string) {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", root))
	if d := filepath.Join("/sys/fs/cgroup", root); isDir(d) {
		dirs = append(dirs, d)
	}
	for _, top := range dirs {
		var all []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				all = append(all, p)
			}
			return nil
		})
		for i := len(all) - 1; i >= 0; i-- {
			var err error
			for try := 0; try < 50; try++ {
				if err = syscall.Rmdir(all[i]); err == nil || errors.Is(err, syscall.ENOENT) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil && !errors.Is(err, syscall.ENOENT) {
				fmt.Fprintf(os.Stderr, "e2e: could not remove cgroup %s: %v\n", all[i], err)
			}
		}
	}
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// kubeletSysctls are the values the kubelet requires with protectKernelDefaults; inside the
// namespace they are files bind-mounted over /proc/sys, so the host's settings never change.
var kubeletSysctls = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

func initStage() int {
	if err := prepareNamespace(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: prepare the node namespace: %v\n", err)
		return 1
	}
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), stageEnv+"=run")
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: start the suite in the node namespace: %v\n", err)
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	// PID 1 reaps every orphan; the suite's own exit status is the namespace's.
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: wait: %v\n", err)
			return 1
		}
		if pid != cmd.Process.Pid {
			continue
		}
		if ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ws.ExitStatus()
	}
}

func prepareNamespace() error {
	mounts := []struct{ src, target, fstype string }{
		{"proc", "/proc", "proc"},
		{"pullgate-e2e-run", "/run", "tmpfs"},
		{"pullgate-e2e-log", "/var/log", "tmpfs"},
		{"pullgate-e2e-cni", "/var/lib/cni", "tmpfs"},
	}
	// Nothing mounted here propagates back to the host.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	for _, m := range mounts {
		if err := syscall.Mount(m.src, m.target, m.fstype, 0, ""); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	dir := "/run/pullgate-e2e/sysctl"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for key, value := range kubeletSysctls {
		f := filepath.Join(dir, strings.ReplaceAll(key, "/", "_"))
		if err := os.WriteFile(f, []byte(value+"\n"), 0o644); err != nil {
			return err
		}
		if err := syscall.Mount(f, "/proc/sys/"+key, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s: %w", key, err)
		}
	}
	if err := syscall.Sethostname([]byte(NodeName)); err != nil {
		return fmt.Errorf("sethostname: %w", err)
	}
	// The node's address on an interface of its own, with the default route on it, so
	// components that look for "the host's interface" find it and nothing leaves the namespace.
	// A veth pair whose ends both stay here: this kernel has no dummy interfaces.
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "name", nodeIface, "type", "veth", "peer", "name", nodeIface + "-peer"},
		{"addr", "add", NodeIP + "/32", "dev", nodeIface},
		{"link", "set", nodeIface + "-peer", "up"},
		{"link", "set", nodeIface, "up"},
		{"route", "add", "default", "dev", nodeIface},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	// This namespace's own forwarding switch (pods reach Services and the node through it).
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("ip_forward in the node namespace: %w", err)
	}
	return nil
}
