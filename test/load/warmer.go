package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/time/rate"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/resolve"
)

// warmerCommand makes this binary stand in for pullgate's controller warming a mirror, for
// the warm scenario's -warming run: one process serves a large image from a mirror throttled
// like a pull-through cache filling from a distant upstream, and reads it through that mirror
// with pullgate's warm reader (resolve.Resolver.Warm, what the controller's queue calls), over
// and over, until it is stopped. The controller proper needs an API server; what a warm costs
// the machine is this read.
const warmerCommand = "warmer"

// warmBlock is the random block the large layer repeats: its bytes cost nothing to make, and
// its digest is computed once.
const warmBlock = 1 << 20

// runWarmer serves the mirror on -addr and warms through it until ctx ends. GET /stats on the
// same address says how many bytes the warms read so far.
func runWarmer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet(warmerCommand, flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "the mirror's listen address")
	size := fs.Int64("size", 1<<30, "bytes of the image's layer")
	layers := fs.Int("layers", 4, "layers the size is split into (read 3 at a time, as the controller does)")
	mbits := fs.Float64("mbits", 400, "the mirror's bandwidth, Mbit/s")
	if err := fs.Parse(args); err != nil {
		return err
	}
	m, err := newBigImage(*size, *layers, *mbits)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: m, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	defer func() { _ = srv.Close() }()

	host := l.Addr().String()
	r, err := resolve.New(resolve.Options{Registries: map[string]resolve.Registry{host: {Insecure: true}}})
	if err != nil {
		return err
	}
	ref, err := name.NewDigest(host+"/big@"+m.digest, name.Insecure)
	if err != nil {
		return err
	}
	for ctx.Err() == nil {
		began := time.Now()
		res, err := r.Warm(ctx, contract.WarmRequest{Ref: ref, Progress: func(n int64) { m.read.Add(n) }})
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return fmt.Errorf("warm: %w", err)
		}
		m.warms.Add(1)
		fmt.Printf("warmed %d bytes, %d blobs in %s\n", res.Bytes, res.Blobs, time.Since(began).Round(time.Millisecond))
	}
	return nil
}

// bigImage serves one image, a small config and layers of one random block repeated each, with
// the layers' bytes paced at the mirror's bandwidth (shared, like one uplink).
type bigImage struct {
	digest   string // the manifest's
	manifest []byte
	config   []byte
	cfg      v1.Hash
	layers   map[string]bigLayer // by blob path
	limit    *rate.Limiter
	read     atomic.Int64 // bytes the warms read
	warms    atomic.Int64
}

type bigLayer struct {
	size  int64
	block []byte
}

func newBigImage(size int64, layers int, mbits float64) (*bigImage, error) {
	if size <= 0 || layers <= 0 || mbits <= 0 {
		return nil, errors.New("-size, -layers and -mbits must be positive")
	}
	m := &bigImage{layers: map[string]bigLayer{}, limit: rate.NewLimiter(rate.Limit(mbits*1e6/8), warmChunk)}
	var err error
	if m.config, err = json.Marshal(v1.ConfigFile{Architecture: "amd64", OS: "linux", RootFS: v1.RootFS{Type: "layers"}}); err != nil {
		return nil, err
	}
	if m.cfg, _, err = v1.SHA256(bytes.NewReader(m.config)); err != nil {
		return nil, err
	}
	mf := v1.Manifest{
		SchemaVersion: 2, MediaType: types.OCIManifestSchema1,
		Config: v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(m.config)), Digest: m.cfg},
	}
	for range layers {
		l := bigLayer{size: size / int64(layers), block: make([]byte, warmBlock)}
		if _, err := rand.Read(l.block); err != nil {
			return nil, err
		}
		h := sha256.New()
		for off := int64(0); off < l.size; off += warmBlock {
			h.Write(l.block[:min(warmBlock, l.size-off)])
		}
		d := v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
		m.layers["/v2/big/blobs/"+d.String()] = l
		mf.Layers = append(mf.Layers, v1.Descriptor{MediaType: types.OCILayer, Size: l.size, Digest: d})
	}
	if m.manifest, err = json.Marshal(mf); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(m.manifest)
	m.digest = "sha256:" + hex.EncodeToString(sum[:])
	return m, nil
}

// warmChunk is what the mirror writes at once, and its rate limiter's burst.
const warmChunk = 64 << 10

func (m *bigImage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch p := r.URL.Path; {
	case p == "/v2/":
		w.WriteHeader(http.StatusOK)
	case p == "/stats":
		_, _ = fmt.Fprintf(w, "%d %d\n", m.read.Load(), m.warms.Load())
	case p == "/v2/big/manifests/"+m.digest:
		w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
		w.Header().Set("Docker-Content-Digest", m.digest)
		_, _ = w.Write(m.manifest)
	case p == "/v2/big/blobs/"+m.cfg.String():
		_, _ = w.Write(m.config)
	default:
		l, ok := m.layers[p]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(l.size, 10))
		for off := int64(0); off < l.size; {
			chunk := l.block[off%warmBlock:]
			chunk = chunk[:min(int64(len(chunk)), warmChunk, l.size-off)]
			if m.limit.WaitN(r.Context(), len(chunk)) != nil {
				return
			}
			if _, err := w.Write(chunk); err != nil {
				return
			}
			off += int64(len(chunk))
		}
	}
}

// warmStats reads a warmer's /stats: bytes read and warms done so far.
func warmStats(ctx context.Context, addr string) (int64, int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/stats", nil)
	if err != nil {
		return 0, 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	var read, warms int64
	if _, err := fmt.Fscan(resp.Body, &read, &warms); err != nil {
		return 0, 0, fmt.Errorf("warmer stats: %w", err)
	}
	return read, warms, nil
}

// warmer is a running warmerCommand child, and what it had read when the measured run began.
type warmer struct {
	proc  *child
	addr  string
	read  int64
	cpu   time.Duration
	began time.Time
}

// startWarmer starts the stand-in controller and returns once its first warm is reading.
func (h *harness) startWarmer(ctx context.Context) (*warmer, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	w := &warmer{addr: "127.0.0.1:" + strconv.Itoa(ports[0])}
	w.proc, err = startChild("warmer", h.logPath("warmer"), exe, warmerCommand, "-addr", w.addr,
		"-size", strconv.FormatInt(h.o.warmSize, 10), "-mbits", strconv.FormatFloat(h.o.warmMbits, 'g', -1, 64))
	if err != nil {
		return nil, err
	}
	err = w.proc.waitReady(ctx, func(ctx context.Context) error {
		read, _, err := warmStats(ctx, w.addr)
		if err == nil && read == 0 {
			err = errors.New("no byte read yet")
		}
		return err
	})
	if err != nil {
		w.proc.stop()
		return nil, err
	}
	w.read, _, err = warmStats(ctx, w.addr)
	if err == nil {
		w.cpu, err = w.proc.cpu()
	}
	w.began = time.Now()
	if err != nil {
		w.proc.stop()
		return nil, err
	}
	return w, nil
}

// stop stops the warmer and says what it did since startWarmer returned.
func (w *warmer) stop(ctx context.Context, o options) (string, error) {
	read, warms, err := warmStats(ctx, w.addr)
	cpu, err2 := w.proc.cpu()
	took := time.Since(w.began)
	w.proc.stop()
	if err := errors.Join(err, err2); err != nil {
		return "", err
	}
	n := read - w.read
	return fmt.Sprintf("warming on: during the measured slices a stand-in controller (pullgate's warm reader, a process of its own) "+
		"read %s through a local mirror paced at %g Mbit/s (%.0f MiB/s; %d warms of %s done in all), using %.0f%% of one CPU",
		mib(n), o.warmMbits, float64(n)/(1<<20)/took.Seconds(), warms, mib(o.warmSize), 100*float64(cpu-w.cpu)/float64(took)), nil
}
