package resolve_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// distributionBinary is Debian's docker-registry package: Distribution v2.8, the registry most
// pull-through mirrors run. CI installs it; a machine without it fails here rather than
// skipping, so a missing install is never mistaken for a pass.
const distributionBinary = "/usr/bin/docker-registry"

// startPullThrough runs Distribution as a pull-through cache of upstream (a host:port serving
// plain HTTP) and returns its host:port once it answers /v2/. The process is killed when the
// test ends, and its log is printed if the test failed.
func startPullThrough(t *testing.T, upstream string) string {
	t.Helper()
	if _, err := os.Stat(distributionBinary); err != nil {
		t.Fatalf("%s is required for the pull-through test (apt-get install -y docker-registry): %v", distributionBinary, err)
	}
	return startPullThroughWith(t, distributionBinary, upstream)
}

// startPullThroughWith is startPullThrough with another Distribution binary (v3). An empty
// upstream starts a plain registry, one that images are pushed to.
func startPullThroughWith(t *testing.T, binary, upstream string) string {
	t.Helper()
	// A free port can be taken between our probe and the registry's bind; try a few.
	var lastErr error
	for range 3 {
		host, err := tryPullThrough(t, binary, upstream)
		if err == nil {
			return host
		}
		lastErr = err
	}
	t.Fatalf("Distribution did not start: %v", lastErr)
	return ""
}

func tryPullThrough(t *testing.T, binary, upstream string) (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	dir := t.TempDir()
	host := fmt.Sprintf("127.0.0.1:%d", port)
	config := fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  cache:
    blobdescriptor: inmemory
http:
  addr: %s
`, filepath.Join(dir, "data"), host)
	if upstream != "" {
		config += fmt.Sprintf("proxy:\n  remoteurl: http://%s\n", upstream)
	}
	path := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		return "", err
	}

	var out lockedBuffer
	cmd := exec.Command(binary, "serve", path)
	cmd.Stdout, cmd.Stderr = &out, &out
	// Distribution reads REGISTRY_* variables as configuration; keep the environment out.
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + dir}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start %s: %w", binary, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		_ = cmd.Process.Kill()
		<-exited
	}

	if err := waitReady(host, exited, &waitErr); err != nil {
		stop()
		return "", fmt.Errorf("%w; log:\n%s", err, out.String())
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("Distribution log:\n%s", out.String())
		}
	})
	return host, nil
}

// waitReady polls GET /v2/ until it answers 200, the process exits, or 15 s pass.
func waitReady(host string, exited <-chan struct{}, waitErr *error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/v2/", nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("exited before it was ready: %w", *waitErr)
		case <-ctx.Done():
			return errors.New("not ready after 15s")
		case <-tick.C:
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
