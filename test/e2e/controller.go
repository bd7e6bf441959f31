package e2e

import (
	"encoding/json"
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
// as StartWebhook runs serve: policy from policyPath, own namespace namespace, no leader
// election, no metrics or probe ports; args are appended. It is stopped when t ends; on failure
// the tail of its log is printed.
func (e *Env) StartController(t testing.TB, policyPath, namespace string, args ...string) *Process {
	t.Helper()
	n := strconv.FormatInt(controllerSeq.Add(1), 10)
	all := append([]string{"controller",
		"--kubeconfig", e.Kubeconfig,
		"--policy", policyPath,
		"--namespace", namespace,
		"--leader-elect=false",
		"--metrics-bind-address", "0",
		"--health-probe-bind-address", "0",
		"-v", "1",
	}, args...)
	p, err := e.startProcess("controller-"+n, filepath.Join(e.TestDir(t), "controller-"+n+".log"), e.Opts.Webhook, all...)
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

// ModuleDir is the directory of module@version in the Go module cache, downloaded if need be
// (the suite reads upstream CRD manifests from their modules rather than copies).
func ModuleDir(t testing.TB, module string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "go", "mod", "download", "-json", module).Output()
	if err != nil {
		t.Fatalf("go mod download %s: %v", module, err)
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil || m.Dir == "" {
		t.Fatalf("go mod download %s: %s %v", module, m.Error, err)
	}
	return m.Dir
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
