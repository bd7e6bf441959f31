package main

import (
	"bytes"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestSleeper builds the sleeper as the image does (hack/build.sh) and runs it: static and small,
// it sleeps until SIGTERM (or SIGINT) and then exits 0; --install copies it, executable; anything
// else is a usage error.
func TestSleeper(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the sleeper")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "sleeper")
	build := exec.CommandContext(t.Context(), "../../hack/build.sh", bin, "test", "./cmd/sleeper")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("hack/build.sh: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the sleeper is dynamically linked: it must run in images without libc")
		}
	}
	f.Close()
	st, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() > 2<<20 {
		t.Errorf("the sleeper is %d bytes, want at most 2 MiB: it is copied into every pre-pull pod", st.Size())
	}
	t.Logf("sleeper: %d bytes", st.Size())

	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		cmd := exec.Command(bin)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			t.Fatalf("the sleeper exited before any signal: %v", err)
		case <-time.After(300 * time.Millisecond):
		}
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("after %s: %v, want exit 0", sig, err)
			}
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("still running 5s after %s", sig)
		}
	}

	dst := filepath.Join(dir, "copy", "sleeper")
	if err := os.Mkdir(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "--install", dst).CombinedOutput(); err != nil {
		t.Fatalf("--install: %v\n%s", err, out)
	}
	orig, _ := os.ReadFile(bin)
	cp, err := os.ReadFile(dst)
	if err != nil || !bytes.Equal(orig, cp) {
		t.Errorf("--install: the copy differs from the binary (%v)", err)
	}
	if st, err := os.Stat(dst); err != nil || st.Mode().Perm()&0o111 == 0 {
		t.Errorf("--install: the copy is not executable: %v %v", st.Mode(), err)
	}
	if out, err := exec.Command(bin, "--install", filepath.Join(dir, "missing", "sleeper")).CombinedOutput(); exitCode(err) != 1 || !bytes.Contains(out, []byte("missing")) {
		t.Errorf("--install into a missing directory: %v %q, want exit 1 naming the path", err, out)
	}
	for _, args := range [][]string{{"sleep"}, {"--install"}, {"--install", "a", "b"}} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if exitCode(err) != 2 || !bytes.Contains(out, []byte("usage")) {
			t.Errorf("%q: %v %q, want exit 2 with the usage", args, err, out)
		}
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
