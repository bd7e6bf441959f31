package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pullgate/pullgate/test/certmanager"
)

var controllerSeq atomic.Int64

// StartController runs `webhook controller` against the suite's API server as its own process,
// as StartWebhook runs serve (see RunController). It is stopped when t ends; on failure the tail
// of its log is printed.
func (e *Env) StartController(t testing.TB, policyPath, namespace string, args ...string) *Process {
	t.Helper()
	n := strconv.FormatInt(controllerSeq.Add(1), 10)
	p, err := e.RunController(filepath.Join(e.TestDir(t), "controller-"+n+".log"), policyPath, namespace, args...)
	if err != nil {
		t.Fatalf("start controller: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last lines of %s:\n%s", p.LogPath, Tail(p.LogPath, 40))
		}
		p.Stop(5 * time.Second)
	})
	return p
}

// RunController starts `webhook controller` with the policy at policyPath and own namespace
// namespace: no leader election, no metrics or probe ports, -v 1; args are appended. The Env
// stops it at Close.
func (e *Env) RunController(logPath, policyPath, namespace string, args ...string) (*Process, error) {
	all := append([]string{"controller",
		"--kubeconfig", e.Kubeconfig,
		"--policy", policyPath,
		"--namespace", namespace,
		"--leader-elect=false",
		"--metrics-bind-address", "0",
		"--health-probe-bind-address", "0",
		"-v", "1",
	}, args...)
	return e.startProcess("controller", logPath, e.Opts.Webhook, all...)
}

// ModuleDir is the directory of module@version in the Go module cache, downloaded if need be
// (the suite reads upstream CRD manifests from their modules rather than copies).
func ModuleDir(t testing.TB, module string) string {
	t.Helper()
	dir, err := ModuleDirOf(t.Context(), module)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// ModuleDirOf is ModuleDir outside a test.
func ModuleDirOf(ctx context.Context, module string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "mod", "download", "-json", module).Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w", module, err)
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil {
		return "", fmt.Errorf("go mod download %s: %w", module, err)
	}
	if m.Dir == "" {
		return "", fmt.Errorf("go mod download %s: %s", module, m.Error)
	}
	return m.Dir, nil
}

// InstallCRDs installs the CustomResourceDefinitions in dir (every *.yaml) and waits until the
// API server serves them. They stay: CRDs are cluster-wide and the API server is thrown away
// with the suite.
func (e *Env) InstallCRDs(t testing.TB, dir string) {
	t.Helper()
	crds, err := certmanager.CRDs(dir)
	if err == nil {
		err = certmanager.InstallCRDs(t.Context(), e.Config, crds)
	}
	if err != nil {
		t.Fatalf("install the CRDs of %s: %v", dir, err)
	}
}
