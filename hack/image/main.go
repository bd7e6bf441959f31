// Command image assembles pullgate's OCI image from a prebuilt static binary, without a Docker
// engine: one layer holding /webhook, /sleeper (the pre-pull containers' process, copied into
// every pre-pull pod) and the build host's CA bundle (the webhook reaches registries over TLS) on
// an empty base, written to an OCI layout directory and optionally
// pushed. hack/image.sh builds the binary and runs this; the Dockerfile builds the equivalent image
// on distroless.
//
// The image is reproducible: fixed file times and owners, no creation date in the config.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// nonroot is distroless's "nonroot" user and group; the chart's securityContext expects it.
const nonroot = "65532:65532"

type options struct {
	binary   string
	sleeper  string
	caBundle string
	out      string
	push     string
	insecure bool
	platform string
	version  string
	revision string
	source   string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	var o options
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	fs.StringVar(&o.binary, "binary", "", "static webhook binary to put at /webhook (required)")
	fs.StringVar(&o.sleeper, "sleeper", "", "static sleeper binary (cmd/sleeper) to put at /sleeper (required)")
	fs.StringVar(&o.caBundle, "ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "PEM roots to put at /etc/ssl/certs/ca-certificates.crt; empty for none")
	fs.StringVar(&o.out, "out", "_out/image", "OCI layout directory to (re)create")
	fs.StringVar(&o.push, "push", "", "reference to push to, e.g. 127.0.0.1:5000/pullgate:dev")
	fs.BoolVar(&o.insecure, "insecure", false, "allow plain HTTP to the registry (loopback registries always may)")
	fs.StringVar(&o.platform, "platform", "linux/amd64", "os/arch the binary was built for")
	fs.StringVar(&o.version, "version", "dev", "org.opencontainers.image.version")
	fs.StringVar(&o.revision, "revision", "unknown", "org.opencontainers.image.revision")
	fs.StringVar(&o.source, "source", "https://github.com/pullgate/pullgate", "org.opencontainers.image.source")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.binary == "" || o.sleeper == "" {
		return errors.New("-binary and -sleeper are required")
	}

	osName, arch, ok := strings.Cut(o.platform, "/")
	if !ok {
		return fmt.Errorf("-platform %q: want os/arch", o.platform)
	}
	platform := v1.Platform{OS: osName, Architecture: arch}

	img, err := build(o, platform)
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("digest: %w", err)
	}
	if err := writeLayout(o.out, img, o.push, platform); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (%s)\n", o.out, digest)
	if o.push == "" {
		return nil
	}
	var nameOpts []name.Option
	if o.insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	ref, err := name.ParseReference(o.push, nameOpts...)
	if err != nil {
		return fmt.Errorf("parse -push: %w", err)
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return fmt.Errorf("push %s: %w", ref, err)
	}
	fmt.Fprintf(stdout, "pushed %s@%s\n", ref.Context(), digest)
	return nil
}

// build returns the image: empty base, one layer, a config naming the user, entrypoint and labels.
func build(o options, platform v1.Platform) (v1.Image, error) {
	var files []file
	bin, err := os.ReadFile(o.binary)
	if err != nil {
		return nil, fmt.Errorf("read binary: %w", err)
	}
	files = append(files, file{name: "webhook", mode: 0o755, data: bin})
	sleeper, err := os.ReadFile(o.sleeper)
	if err != nil {
		return nil, fmt.Errorf("read sleeper: %w", err)
	}
	files = append(files, file{name: "sleeper", mode: 0o755, data: sleeper})
	if o.caBundle != "" {
		pem, err := os.ReadFile(o.caBundle)
		if err != nil {
			return nil, fmt.Errorf("read CA bundle: %w", err)
		}
		files = append(files, file{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: pem})
	}
	layerTar, err := tarFiles(files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{CreatedBy: "pullgate hack/image: /webhook /sleeper", Comment: "static binaries"},
	})
	if err != nil {
		return nil, fmt.Errorf("append layer: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = platform.OS, platform.Architecture
	cfg.Config.User = nonroot
	cfg.Config.Entrypoint = []string{"/webhook"}
	cfg.Config.Cmd = nil
	cfg.Config.WorkingDir = "/"
	cfg.Config.Env = []string{"PATH=/", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}
	cfg.Config.Labels = map[string]string{
		"org.opencontainers.image.source":   o.source,
		"org.opencontainers.image.version":  o.version,
		"org.opencontainers.image.revision": o.revision,
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}
	return img, nil
}

type file struct {
	name string
	mode int64
	data []byte
}

// tarFiles writes the files and their parent directories, root-owned with zero times, in a
// stable order, so the same inputs give the same layer digest.
func tarFiles(files []file) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	seen := map[string]bool{}
	for _, f := range files {
		var dirs []string
		for d := path.Dir(f.name); d != "."; d = path.Dir(d) {
			dirs = append([]string{d}, dirs...)
		}
		for _, d := range dirs {
			if seen[d] {
				continue
			}
			seen[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, Format: tar.FormatPAX}); err != nil {
				return nil, fmt.Errorf("tar %s: %w", d, err)
			}
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: f.mode, Size: int64(len(f.data)), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("tar %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("tar: %w", err)
	}
	return buf.Bytes(), nil
}

// writeLayout replaces dir with an OCI layout holding just this image.
func writeLayout(dir string, img v1.Image, ref string, platform v1.Platform) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clear %s: %w", dir, err)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("layout %s: %w", dir, err)
	}
	opts := []layout.Option{layout.WithPlatform(platform)}
	if ref != "" {
		opts = append(opts, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref}))
	}
	if err := p.AppendImage(img, opts...); err != nil {
		return fmt.Errorf("write image to %s: %w", dir, err)
	}
	return nil
}
