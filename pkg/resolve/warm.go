package resolve

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/errgroup"

	"github.com/pullgate/pullgate/pkg/contract"
)

var _ contract.Warmer = (*Resolver)(nil)

// ErrDigestMismatch says the bytes a registry served for a blob do not hash to the blob's digest,
// or are not its size. A node pulling them would fail the same way.
var ErrDigestMismatch = errors.New("blob does not match its digest")

const (
	// warmParallel is how many blobs of one image are read at once: containerd's default
	// max_concurrent_downloads, so the mirror sees the load one pulling node puts on it.
	warmParallel = 3
	// warmBuffer is the one buffer each blob read goes through: memory stays the same for a
	// 10 MB and a 15 GB image, and nothing touches the disk.
	warmBuffer = 32 << 10
	// maxWarmBlobs bounds the blobs of one image (all platforms read): an index is data from a
	// registry, and a hostile one could list millions.
	maxWarmBlobs = 4096
)

// Warm reads req.Ref through its registry as a node pulls it: the index, the manifests of
// req.Platforms, then each config and layer to the end, checking every byte against its digest
// and discarding it. The requests go through the resolver's transports, credentials, sessions
// and the registry's circuit breaker, with no retry of their own: the caller's queue decides
// when to try again (see contract.WarmFailure). Errors are *contract.WarmFailure, or what
// req.Start returned.
func (r *Resolver) Warm(ctx context.Context, req contract.WarmRequest) (contract.WarmResult, error) {
	cfg := r.cfg.Load()
	host := req.Ref.Context().RegistryStr()
	reg := cfg.registry(host)
	var opts []name.Option
	if reg.insecure {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.NewDigest(req.Ref.Name(), opts...)
	if err != nil {
		return contract.WarmResult{}, &contract.WarmFailure{Outcome: contract.WarmError, Err: err}
	}
	auth, identity, err := cfg.auth(ctx, reg, ref.Context(), podCreds{})
	if err != nil {
		return contract.WarmResult{}, &contract.WarmFailure{Outcome: contract.WarmUnauthorized, Err: err}
	}
	_, listed := cfg.registries[host]
	w := &warm{
		r: r, cfg: cfg, reg: reg, auth: auth, key: sessionKey(reg, ref.Context(), identity), listed: listed,
		repo: ref.Context(), br: r.breakers.get(host, r.label(host)), req: req,
	}
	blobs, err := w.manifests(ctx, ref)
	if err != nil {
		return w.result(), err
	}
	var total int64
	for _, b := range blobs {
		total += b.Size
	}
	if req.Start != nil {
		if err := req.Start(total, len(blobs)); err != nil {
			return w.result(), err
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(warmParallel)
	var mu sync.Mutex
	for _, b := range blobs {
		g.Go(func() error {
			present, err := w.blob(gctx, b)
			if err == nil && !present {
				mu.Lock()
				w.missing = append(w.missing, b.Digest.String())
				mu.Unlock()
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return w.result(), err
	}
	res := w.result()
	if len(res.Missing) > 0 {
		return res, &contract.WarmFailure{Outcome: contract.WarmMissing, Err: fmt.Errorf("%s lacks %d of %d blobs of %s", host, len(res.Missing), len(blobs), req.Ref)}
	}
	return res, nil
}

// warm is one Warm call.
type warm struct {
	r      *Resolver
	cfg    *config
	reg    registry
	auth   authn.Authenticator
	key    string
	listed bool
	repo   name.Repository
	br     *breaker
	req    contract.WarmRequest
	// advisory: the outcome leaves the breaker as it was (an open one still refuses), for
	// background reads that no admission waits on (fidelity.go).
	advisory bool

	manifestCount, blobCount atomic.Int64
	bytes                    atomic.Int64
	missing                  []string
}

func (w *warm) result() contract.WarmResult {
	return contract.WarmResult{Manifests: int(w.manifestCount.Load()), Blobs: int(w.blobCount.Load()), Bytes: w.bytes.Load(), Missing: w.missing}
}

// manifests reads the index (if ref is one) and the image manifests a node of req.Platforms
// would read, and returns their configs and layers, each once.
func (w *warm) manifests(ctx context.Context, ref name.Digest) ([]v1.Descriptor, error) {
	top, err := w.manifest(ctx, ref)
	if err != nil {
		return nil, err
	}
	images := []*remote.Descriptor{top}
	if top.MediaType.IsIndex() {
		idx, err := v1.ParseIndexManifest(bytes.NewReader(top.Manifest))
		if err != nil {
			return nil, w.fail(ctx, ref, fmt.Errorf("%w: index: %w", ErrRegistry, err))
		}
		images = images[:0]
		for _, m := range idx.Manifests {
			if !m.MediaType.IsImage() || !wanted(m.Platform, w.req.Platforms) {
				continue
			}
			d, err := w.manifest(ctx, ref.Context().Digest(m.Digest.String()))
			if err != nil {
				return nil, err
			}
			images = append(images, d)
		}
		if len(images) == 0 {
			return nil, &contract.WarmFailure{Outcome: contract.WarmNotFound, Err: fmt.Errorf("%s has no manifest for the nodes' platforms %v", w.req.Ref, w.req.Platforms)}
		}
	}
	seen := map[v1.Hash]bool{}
	var blobs []v1.Descriptor
	for _, d := range images {
		m, err := v1.ParseManifest(bytes.NewReader(d.Manifest))
		if err != nil {
			return nil, w.fail(ctx, ref, fmt.Errorf("%w: manifest %s: %w", ErrRegistry, d.Digest, err))
		}
		for _, b := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if seen[b.Digest] || len(b.URLs) > 0 {
				continue // foreign layers are fetched from their URLs, never from the mirror
			}
			seen[b.Digest] = true
			blobs = append(blobs, b)
		}
	}
	if len(blobs) > maxWarmBlobs {
		return nil, &contract.WarmFailure{Outcome: contract.WarmError, Err: fmt.Errorf("%s has %d blobs, more than %d", w.req.Ref, len(blobs), maxWarmBlobs)}
	}
	return blobs, nil
}

// wanted reports whether an index entry is for one of the platforms (all, when none is given).
func wanted(p *v1.Platform, platforms []contract.Platform) bool {
	if p == nil || p.OS == "unknown" || p.Architecture == "unknown" {
		return false
	}
	if len(platforms) == 0 {
		return true
	}
	for _, want := range platforms {
		if p.OS == want.OS && p.Architecture == want.Architecture {
			return true
		}
	}
	return false
}

// manifest GETs one manifest by digest; remote checks that the bytes are the digest's.
func (w *warm) manifest(ctx context.Context, ref name.Digest) (*remote.Descriptor, error) {
	var desc *remote.Descriptor
	err := w.do(ctx, ref, func(ctx context.Context, rt http.RoundTripper) error {
		var err error
		desc, err = remote.Get(ref, remote.WithContext(ctx), remote.WithTransport(rt))
		return err
	})
	if err == nil {
		w.manifestCount.Add(1)
	}
	return desc, err
}

// blob reads one blob to the end (GET), or with CheckOnly asks whether the registry has it
// (HEAD). It reports whether the blob is there.
func (w *warm) blob(ctx context.Context, b v1.Descriptor) (bool, error) {
	ref := w.repo.Digest(b.Digest.String())
	present := true
	err := w.do(ctx, ref, func(ctx context.Context, rt http.RoundTripper) error {
		method := http.MethodGet
		if w.req.CheckOnly {
			method = http.MethodHead
		}
		resp, err := w.send(ctx, rt, method, b.Digest)
		if err != nil {
			return err
		}
		defer func() { _ = resp.Body.Close() }()
		switch {
		case w.req.CheckOnly && resp.StatusCode == http.StatusNotFound:
			present = false
			return nil
		case resp.StatusCode != http.StatusOK:
			return transport.CheckError(resp, http.StatusOK)
		case w.req.CheckOnly:
			return nil
		}
		return w.read(resp.Body, b)
	})
	if err == nil && present {
		w.blobCount.Add(1)
		if w.req.CheckOnly {
			w.bytes.Add(b.Size)
		}
	}
	return present, err
}

// send makes one blob request on the session's round tripper, following redirects (registries
// send blobs from object storage).
func (w *warm) send(ctx context.Context, rt http.RoundTripper, method string, digest v1.Hash) (*http.Response, error) {
	scheme := "https"
	if w.reg.insecure {
		scheme = "http"
	}
	u := url.URL{Scheme: scheme, Host: w.repo.RegistryStr(), Path: "/v2/" + w.repo.RepositoryStr() + "/blobs/" + digest.String()}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, err
	}
	client := http.Client{Transport: rt, CheckRedirect: checkRedirect(w.reg.insecure)}
	return client.Do(req)
}

// read hashes body to the end through one fixed buffer, reporting progress, and checks the
// digest and size.
func (w *warm) read(body io.Reader, b v1.Descriptor) error {
	var h hash.Hash
	switch b.Digest.Algorithm {
	case "sha256":
		h = sha256.New()
	default:
		return fmt.Errorf("%w: digest algorithm %q", errUnsupported, b.Digest.Algorithm)
	}
	buf := make([]byte, warmBuffer)
	var n int64
	for {
		k, err := body.Read(buf)
		if k > 0 {
			h.Write(buf[:k])
			n += int64(k)
			w.bytes.Add(int64(k))
			if w.req.Progress != nil {
				w.req.Progress(int64(k))
			}
			if n > b.Size {
				return fmt.Errorf("%w: %s: more than its %d bytes", ErrDigestMismatch, b.Digest, b.Size)
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if n != b.Size {
		return fmt.Errorf("%w: %s: %d bytes, want %d", ErrDigestMismatch, b.Digest, n, b.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != b.Digest.Hex {
		return fmt.Errorf("%w: %s: the bytes hash to sha256:%s", ErrDigestMismatch, b.Digest, got)
	}
	return nil
}

// do runs one registry step under the breaker on the session for the warm's key. A reused
// session the registry refuses gets one fresh handshake, as Resolver.authenticated does. The
// step's requests, the handshake's included, note a Retry-After in ctx for the failure.
func (w *warm) do(ctx context.Context, ref name.Reference, step func(context.Context, http.RoundTripper) error) error {
	r, cfg := w.r, w.cfg
	note := &waitNote{}
	ctx = context.WithValue(ctx, waitNoteKey{}, note)
	if ok, until := w.br.allow(cfg.now()); !ok {
		return &contract.WarmFailure{Outcome: contract.WarmCircuitOpen, Retry: true, RetryAfter: until.Sub(cfg.now()),
			Err: fmt.Errorf("warm %s: %w: %s is left alone until %s", ref, ErrCircuitOpen, ref.Context().RegistryStr(), until.UTC().Format(time.RFC3339))}
	}
	rt, reused := r.sessions.rts.get(w.key)
	var err error
	for {
		if rt == nil {
			if rt, err = r.session(ctx, cfg, w.reg, w.auth, w.key, ref.Context()); err != nil {
				break
			}
		}
		if err = step(ctx, rt); err == nil || sessionHolds(err) || errors.Is(err, ErrDigestMismatch) {
			break
		}
		r.sessions.forget(w.key, rt, w.reg, ref.Context())
		var terr *transport.Error
		if !reused || ctx.Err() != nil || !errors.As(err, &terr) || !denied(terr) {
			break
		}
		rt, reused = nil, false
	}
	if err != nil && errors.Is(err, ErrDigestMismatch) {
		// The registry answered; what it served is wrong, which a retry will not change.
		r.settle(ctx, cfg, w.br, ref.Context().RegistryStr(), failure{err: err})
		return &contract.WarmFailure{Outcome: contract.WarmDigestMismatch, Err: fmt.Errorf("warm %s: %w", ref, err)}
	}
	var f failure
	if err != nil {
		f = classify(ctx, ref, w.listed, redact(err, w.auth))
	}
	if f.unsent || w.advisory {
		w.br.release()
	} else {
		r.settle(ctx, cfg, w.br, ref.Context().RegistryStr(), f)
	}
	if err == nil {
		return nil
	}
	if d, ok := note.get(); ok {
		err = &retryAfter{err: err, after: d}
	}
	return warmFailure(f.err, err)
}

// fail classifies an error found in an answer (an index that does not parse).
func (w *warm) fail(ctx context.Context, ref name.Reference, err error) error {
	return warmFailure(classify(ctx, ref, w.listed, err).err, err)
}

// warmFailure names the outcome of a classified error; raw is the error before classification,
// for a Retry-After.
func warmFailure(err, raw error) *contract.WarmFailure {
	f := &contract.WarmFailure{Err: err}
	var ra *retryAfter
	if errors.As(raw, &ra) {
		f.RetryAfter = ra.after
	}
	var terr *transport.Error
	switch {
	case errors.Is(err, context.Canceled):
		f.Outcome = contract.WarmCanceled
	case errors.Is(err, ErrForbiddenAddress):
		f.Outcome = contract.WarmForbidden
	case errors.Is(err, ErrNotFound):
		// A pinned digest the mirror cannot produce: its upstream may be away for a while.
		f.Outcome, f.Retry = contract.WarmNotFound, true
	case errors.Is(err, ErrUnauthorized):
		f.Outcome = contract.WarmUnauthorized
	case errors.Is(err, ErrTimeout):
		f.Outcome, f.Retry = contract.WarmTimeout, true
	case errors.As(raw, &terr) && (terr.StatusCode == http.StatusTooManyRequests || hasCode(terr, transport.TooManyRequestsErrorCode)):
		f.Outcome, f.Retry = contract.WarmRateLimited, true
	case errors.Is(err, errUnsupported):
		f.Outcome = contract.WarmError
	case errors.Is(err, ErrRegistry):
		f.Outcome, f.Retry = contract.WarmServerError, true
	default:
		f.Outcome = contract.WarmError
	}
	return f
}
