package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// mirrorPrefix is the path the policy appends upstream repositories to: docker.io's
// library/nginx is served as <host>/hub/library/nginx.
const mirrorPrefix = "hub"

// mirror is go-containerregistry's in-memory registry on 127.0.0.1, playing the pull-through
// mirror the webhook resolves against. It counts every request and every manifest request, and
// can delay manifest requests to stand in for a registry across a network.
type mirror struct {
	host      string
	inner     http.Handler
	srv       *http.Server
	requests  atomic.Int64
	manifests atomic.Int64
	delay     atomic.Int64 // nanoseconds added to every manifest request
	delayAll  atomic.Bool  // add it to every request instead (ping, token, blob too)

	// manifest is a real image's manifest whose config and layer blobs the registry holds;
	// every tag gets a copy with its own annotation, hence its own digest.
	manifest  v1.Manifest
	mediaType string
}

func startMirror() (*mirror, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("mirror: listen: %w", err)
	}
	m := &mirror{
		host:  l.Addr().String(),
		inner: registry.New(registry.Logger(log.New(io.Discard, "", 0))),
	}
	m.srv = &http.Server{Handler: m, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = m.srv.Serve(l) }()

	// One real image, written over HTTP like any client would, so the blobs every manifest
	// names exist.
	img, err := random.Image(1024, 2)
	if err != nil {
		return nil, errors.Join(err, m.close())
	}
	ref, err := name.NewTag(m.host+"/"+mirrorPrefix+"/library/base:1", name.Insecure)
	if err != nil {
		return nil, errors.Join(err, m.close())
	}
	if err := remote.Write(ref, img); err != nil {
		return nil, errors.Join(fmt.Errorf("mirror: push base image: %w", err), m.close())
	}
	mf, err := img.Manifest()
	if err != nil {
		return nil, errors.Join(err, m.close())
	}
	mt, err := img.MediaType()
	if err != nil {
		return nil, errors.Join(err, m.close())
	}
	m.manifest, m.mediaType = *mf, string(mt)
	return m, nil
}

func (m *mirror) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return m.srv.Shutdown(ctx)
}

func (m *mirror) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.requests.Add(1)
	manifest := strings.Contains(r.URL.Path, "/manifests/")
	if manifest {
		m.manifests.Add(1)
	}
	if d := time.Duration(m.delay.Load()); d > 0 && (manifest || m.delayAll.Load()) {
		t := time.NewTimer(d)
		select {
		case <-r.Context().Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	m.inner.ServeHTTP(w, r)
}

// push tags docker.io/library/<repo>:<tag> on the mirror for every tag, each with a distinct
// manifest. It calls the registry handler in process: pushing tens of thousands of tags over
// loopback would take longer than the scenario that uses them.
func (m *mirror) push(repo string, tags []string) error {
	mf := m.manifest
	for _, tag := range tags {
		mf.Annotations = map[string]string{"dev.pullgate.load/tag": repo + ":" + tag}
		body, err := json.Marshal(&mf)
		if err != nil {
			return err
		}
		path := "/v2/" + mirrorPrefix + "/library/" + repo + "/manifests/" + tag
		req := httptest.NewRequest(http.MethodPut, path, bytes.NewReader(body))
		req.Header.Set("Content-Type", m.mediaType)
		rec := httptest.NewRecorder()
		m.inner.ServeHTTP(rec, req)
		if rec.Code != http.StatusCreated {
			return fmt.Errorf("mirror: push %s:%s: %d %s", repo, tag, rec.Code, rec.Body.String())
		}
	}
	return nil
}

// tags returns n tag names with a prefix: t0, t1, ...
func tags(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}
