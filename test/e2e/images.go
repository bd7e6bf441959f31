package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// NodeImages are the images the node needs before any test runs, on the infra registry.
type NodeImages struct {
	// Pause is containerd's sandbox image, by tag.
	Pause string
	// PullgateRepository and PullgateDigest name pullgate's own image (make image) for the chart.
	PullgateRepository, PullgateDigest string
}

func (e *Env) pushNodeImages(ctx context.Context, r *NodeRegistries) (*NodeImages, error) {
	imgs := &NodeImages{Pause: r.Infra + "/e2e/pause:3.10"}
	bin, err := os.ReadFile(e.Opts.Pause)
	if err != nil {
		return nil, fmt.Errorf("pause binary: %w", err)
	}
	pause, err := BuildImage(ImageSpec{Files: map[string]File{"pause": {Data: bin, Mode: 0o755}}, Entrypoint: []string{"/pause"}})
	if err != nil {
		return nil, err
	}
	if _, err := pushImage(ctx, imgs.Pause, pause); err != nil {
		return nil, err
	}
	if e.Opts.PullgateImage == "" {
		return imgs, nil
	}
	p, err := layout.FromPath(e.Opts.PullgateImage)
	if err != nil {
		return nil, fmt.Errorf("pullgate image layout: %w", err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("pullgate image layout %s: %w", e.Opts.PullgateImage, err)
	}
	if len(im.Manifests) == 0 {
		return nil, fmt.Errorf("pullgate image layout %s holds no image (run make image)", e.Opts.PullgateImage)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		return nil, err
	}
	imgs.PullgateRepository = r.Infra + "/pullgate/webhook"
	if imgs.PullgateDigest, err = pushImage(ctx, imgs.PullgateRepository+":e2e", img); err != nil {
		return nil, err
	}
	return imgs, nil
}

// File is one file of a test image.
type File struct {
	Data []byte
	Mode int64
}

// ImageSpec describes a test image for the node, built without a Docker engine.
type ImageSpec struct {
	// Busybox adds a layer with the machine's static busybox as /bin/sh and friends.
	Busybox string
	// Files go into a layer of their own, by path.
	Files map[string]File
	// RandomLayers adds, per entry, a layer of that many incompressible bytes, drawn from Seed
	// and cached as files under LayerDir: the shape of a large ML image.
	RandomLayers []int64
	Seed         uint64
	LayerDir     string
	Entrypoint   []string
	Cmd          []string
	User         string
}

// busyboxApplets are the commands the suite's pods run.
var busyboxApplets = []string{"sh", "sleep", "cat", "echo", "true", "false", "ls", "id", "test", "env", "wc", "head", "date"}

// BuildImage assembles spec into a linux image for this machine's architecture.
func BuildImage(spec ImageSpec) (v1.Image, error) {
	var layers []v1.Layer
	if spec.Busybox != "" {
		bb, err := os.ReadFile(spec.Busybox)
		if err != nil {
			return nil, fmt.Errorf("busybox: %w", err)
		}
		l, err := tarLayer(func(tw *tar.Writer) error {
			if err := writeFile(tw, "bin/busybox", bb, 0o755); err != nil {
				return err
			}
			for _, a := range busyboxApplets {
				if err := tw.WriteHeader(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}); err != nil {
					return err
				}
			}
			return writeFile(tw, "tmp/.keep", nil, 0o644)
		})
		if err != nil {
			return nil, err
		}
		layers = append(layers, l)
	}
	for i, size := range spec.RandomLayers {
		l, err := randomLayer(spec.LayerDir, spec.Seed+uint64(i), size)
		if err != nil {
			return nil, err
		}
		layers = append(layers, l)
	}
	if len(spec.Files) > 0 {
		paths := make([]string, 0, len(spec.Files))
		for p := range spec.Files {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		l, err := tarLayer(func(tw *tar.Writer) error {
			for _, p := range paths {
				if err := writeFile(tw, p, spec.Files[p].Data, spec.Files[p].Mode); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		layers = append(layers, l)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Entrypoint, cf.Config.Cmd, cf.Config.User = spec.Entrypoint, spec.Cmd, spec.User
	cf.Config.Env = []string{"PATH=/bin"}
	return mutate.ConfigFile(img, cf)
}

// Index wraps img in an OCI index, as images on public registries are.
func Index(img v1.Image) v1.ImageIndex {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	return mutate.AppendManifests(idx, mutate.IndexAddendum{
		Add:        img,
		Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}},
	})
}

// pushImage pushes an image or index to ref over plain HTTP and returns its digest.
func pushImage(ctx context.Context, ref string, what remote.Taggable) (string, error) {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return "", err
	}
	var d v1.Hash
	switch w := what.(type) {
	case v1.ImageIndex:
		err = remote.WriteIndex(r, w, remote.WithContext(ctx))
		if err == nil {
			d, err = w.Digest()
		}
	case v1.Image:
		err = remote.Write(r, w, remote.WithContext(ctx))
		if err == nil {
			d, err = w.Digest()
		}
	default:
		return "", fmt.Errorf("push %s: %T is neither an image nor an index", ref, what)
	}
	if err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	return d.String(), nil
}

// Push pushes an image or index to the upstream as repoTag ("e2e/app:v1") and returns its
// digest; pods name it RemoteRef(repoTag).
func (r *NodeRegistries) Push(ctx context.Context, repoTag string, what remote.Taggable) (string, error) {
	return pushImage(ctx, r.PushRef(repoTag), what)
}

func tarLayer(fill func(*tar.Writer) error) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := fill(tw); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.OCILayer))
}

func writeFile(tw *tar.Writer, path string, data []byte, mode int64) error {
	if err := tw.WriteHeader(&tar.Header{Name: path, Mode: mode, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// randomLayer writes (once per seed and size) a gzip layer holding one file of incompressible
// bytes. Stored gzip blocks: compressing random bytes gains nothing and costs a minute per GiB.
func randomLayer(dir string, seed uint64, size int64) (v1.Layer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, fmt.Sprintf("random-%d-%d.tar.gz", seed, size))
	if _, err := os.Stat(path); err != nil {
		if err := writeRandomLayer(path+".tmp", seed, size); err != nil {
			return nil, err
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			return nil, err
		}
	}
	return tarball.LayerFromFile(path, tarball.WithMediaType(types.OCILayer))
}

func writeRandomLayer(path string, seed uint64, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zw, err := gzip.NewWriterLevel(f, gzip.NoCompression)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("data/blob-%d", seed), Mode: 0o644, Size: size, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	var s [32]byte
	s[0], s[1], s[2], s[3] = byte(seed), byte(seed>>8), byte(seed>>16), byte(seed>>24)
	if _, err := io.CopyN(tw, rand.NewChaCha8(s), size); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return f.Close()
}
