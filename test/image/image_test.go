package image

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestMakeImage runs hack/image.sh the way `make image IMAGE=...` does: it builds ../cmd/webhook
// and ../cmd/sleeper (static, -trimpath), assembles the image, writes the OCI layout and pushes to a registry.
func TestMakeImage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the webhook binary")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	u, err := url.Parse(reg.URL)
	if err != nil {
		t.Fatal(err)
	}
	tag := u.Host + "/pullgate/webhook:test"
	out := t.TempDir()

	cmd := exec.CommandContext(t.Context(), filepath.Join(root, "hack", "image.sh"))
	cmd.Env = append(os.Environ(), "OUT="+out, "IMAGE="+tag, "VERSION=v9.9.9-test", "REVISION=0123abc")
	output, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("hack/image.sh (does ./cmd/webhook build?): %v\n%s", err, output)
	}
	t.Logf("hack/image.sh:\n%s", output)

	ref, err := name.ParseReference(tag)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatalf("pulling the pushed image: %v", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != "65532:65532" {
		t.Errorf("user = %q, want 65532:65532 (non-root, what the chart's securityContext expects)", cfg.Config.User)
	}
	if !slices.Equal(cfg.Config.Entrypoint, []string{"/webhook"}) || len(cfg.Config.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q, want [/webhook] and none", cfg.Config.Entrypoint, cfg.Config.Cmd)
	}
	if cfg.OS != "linux" || cfg.Architecture == "" {
		t.Errorf("platform %s/%s", cfg.OS, cfg.Architecture)
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.source":   "https://github.com/pullgate/pullgate",
		"org.opencontainers.image.version":  "v9.9.9-test",
		"org.opencontainers.image.revision": "0123abc",
	} {
		if got := cfg.Config.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}
	if !cfg.Created.IsZero() {
		t.Errorf("created = %s: the image must not carry a build date", cfg.Created)
	}

	files := layerFiles(t, img)
	bin := executable(t, files, "webhook")
	// The sleeper is copied into every pre-pull pod's emptyDir: it must stay small.
	sleeper := executable(t, files, "sleeper")
	if sleeper.hdr.Size > maxSleeper || sleeper.hdr.Size*10 > bin.hdr.Size {
		t.Errorf("/sleeper is %d bytes (/webhook %d): want at most %d and a tenth of the webhook", sleeper.hdr.Size, bin.hdr.Size, maxSleeper)
	}
	t.Logf("/webhook %.1f MiB, /sleeper %.2f MiB", float64(bin.hdr.Size)/(1<<20), float64(sleeper.hdr.Size)/(1<<20))

	// The OCI layout holds the same image.
	idx, err := layout.ImageIndexFromPath(filepath.Join(out, "image"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	pushed, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 1 || m.Manifests[0].Digest != pushed {
		t.Errorf("layout manifests %+v, want exactly the pushed %s", m.Manifests, pushed)
	}

	// Reproducible: the same binary gives the same digest.
	again := filepath.Join(t.TempDir(), "image")
	tool := exec.CommandContext(t.Context(), "go", "run", "./hack/image",
		"-binary", filepath.Join(out, "webhook-linux-"+cfg.Architecture), "-sleeper", filepath.Join(out, "sleeper-linux-"+cfg.Architecture), "-out", again,
		"-platform", "linux/"+cfg.Architecture, "-version", "v9.9.9-test", "-revision", "0123abc")
	tool.Dir = root
	if output, err := tool.CombinedOutput(); err != nil {
		t.Fatalf("hack/image: %v\n%s", err, output)
	} else if !strings.Contains(string(output), pushed.String()) {
		t.Errorf("rebuilding from the same binary gave another image:\n%s\nwant %s", output, pushed)
	}
}

// maxSleeper bounds the sleeper's size: a Go binary importing only os and os/signal, stripped,
// is about 1.4 MiB.
const maxSleeper = 2 << 20

type entry struct {
	hdr  *tar.Header
	head []byte
}

// executable returns the image's file name, failing unless it is a root-owned executable ELF.
func executable(t *testing.T, files map[string]entry, name string) entry {
	t.Helper()
	e, ok := files[name]
	switch {
	case !ok:
		t.Fatalf("no /%s in the image; files: %v", name, keys(files))
	case e.hdr.Mode&0o111 == 0 || e.hdr.Uid != 0:
		t.Errorf("/%s mode %o uid %d, want executable and root-owned", name, e.hdr.Mode, e.hdr.Uid)
	case !bytes.HasPrefix(e.head, []byte("\x7fELF")):
		t.Errorf("/%s is not an ELF binary", name)
	}
	return e
}

// layerFiles lists the regular files of every layer with their headers and first bytes.
func layerFiles(t *testing.T, img v1.Image) map[string]entry {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]entry{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if hdr.Typeflag != tar.TypeReg {
				continue
			}
			head := make([]byte, 4)
			n, _ := io.ReadFull(tr, head)
			files[strings.TrimPrefix(hdr.Name, "/")] = entry{hdr: hdr, head: head[:n]}
		}
		rc.Close()
	}
	return files
}

func keys(m map[string]entry) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
