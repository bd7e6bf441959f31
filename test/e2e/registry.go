package e2e

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// mirrorConfig is the Distribution configuration of the pull-through cache. The proxy section
// is what makes it a mirror: a miss is fetched from remoteurl and stored, so it keeps serving a
// digest after the upstream is gone.
const mirrorConfig = `version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: pullgate-e2e
proxy:
  remoteurl: %s
`

func (e *Env) startRegistries(ctx context.Context) error {
	// Upstream: go-containerregistry's registry in process. Tests push to it directly.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("upstream registry: listen: %w", err)
	}
	logf, err := os.Create(filepath.Join(e.Dir, "upstream-registry.log"))
	if err != nil {
		l.Close()
		return fmt.Errorf("upstream registry log: %w", err)
	}
	srv := &http.Server{
		Handler:           registry.New(registry.Logger(log.New(logf, "", log.LstdFlags|log.Lmicroseconds))),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(l) }()
	e.onClose(func() {
		_ = srv.Close()
		logf.Close()
	})
	e.Upstream = l.Addr().String()

	// Mirror: Distribution in proxy mode, a separate process like in a real cluster.
	_, err = startWithPorts(func() (*Process, error) {
		ports, err := FreePorts(1)
		if err != nil {
			return nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(ports[0])
		data := filepath.Join(e.Dir, "mirror-data")
		_ = os.RemoveAll(data)
		cfgPath := filepath.Join(e.Dir, "mirror.yaml")
		cfg := fmt.Sprintf(mirrorConfig, data, addr, "http://"+e.Upstream)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			return nil, fmt.Errorf("write mirror config: %w", err)
		}
		p, err := e.startProcess("mirror", filepath.Join(e.Dir, "mirror.log"), e.Opts.Registry, "serve", cfgPath)
		if err != nil {
			return nil, err
		}
		err = WaitReady(ctx, p, 30*time.Second, func(ctx context.Context) error {
			return httpOK(ctx, http.DefaultClient, "http://"+addr+"/v2/")
		})
		if err != nil {
			p.Stop(5 * time.Second)
			return nil, err
		}
		e.Mirror = addr
		return p, nil
	})
	if err != nil {
		return fmt.Errorf("mirror registry: %w", err)
	}
	return nil
}

// UpstreamRef is repo[:tag|@digest] on the upstream registry, e.g. "127.0.0.1:40123/e2e/app:v1".
func (e *Env) UpstreamRef(repo string) string { return e.Upstream + "/" + repo }

// MirrorRef is repo[:tag|@digest] on the mirror.
func (e *Env) MirrorRef(repo string) string { return e.Mirror + "/" + repo }

// PushImage pushes a small random single-platform image to the upstream as repoTag ("e2e/app:v1")
// and returns its manifest digest.
func (e *Env) PushImage(t testing.TB, repoTag string) v1.Hash {
	t.Helper()
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatalf("random image: %v", err)
	}
	ref := e.parse(t, e.UpstreamRef(repoTag))
	if err := remote.Write(ref, img, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("digest of %s: %v", ref, err)
	}
	return d
}

// PushIndex pushes a multi-platform image (one random image per platform) as repoTag, with the
// index media type mt (types.DockerManifestList or types.OCIImageIndex), and returns the index
// digest.
func (e *Env) PushIndex(t testing.TB, repoTag string, mt types.MediaType, platforms ...v1.Platform) v1.Hash {
	t.Helper()
	imgType := types.DockerManifestSchema2
	if mt == types.OCIImageIndex {
		imgType = types.OCIManifestSchema1
	}
	idx := mutate.IndexMediaType(empty.Index, mt)
	for _, p := range platforms {
		img, err := random.Image(512, 1)
		if err != nil {
			t.Fatalf("random image: %v", err)
		}
		img = mutate.MediaType(img, imgType)
		if imgType == types.OCIManifestSchema1 {
			img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &p},
		})
	}
	ref := e.parse(t, e.UpstreamRef(repoTag))
	if err := remote.WriteIndex(ref, idx, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("push index %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatalf("digest of %s: %v", ref, err)
	}
	return d
}

// Head asks a registry what ref names right now, without going through pullgate.
func (e *Env) Head(t testing.TB, ref string) *v1.Descriptor {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	d, err := remote.Head(e.parse(t, ref), remote.WithContext(ctx))
	if err != nil {
		t.Fatalf("HEAD %s: %v", ref, err)
	}
	return d
}

func (e *Env) parse(t testing.TB, ref string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("parse %q: %v", ref, err)
	}
	return r
}
