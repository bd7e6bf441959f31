package main

import (
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"sync/atomic"
)

// proxy counts the tag lookups (manifest HEADs by tag: the resolver asks HEAD first, and GETs
// only what a HEAD cannot answer) and all requests that reach the mirror.
type proxy struct {
	addr        string
	tags, total atomic.Int64
}

func (p *proxy) reset() { p.tags.Store(0); p.total.Store(0) }

var byTag = regexp.MustCompile(`/manifests/[^/:@]+$`)

func countingProxy(target string) (*proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{addr: l.Addr().String()}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	go func() {
		_ = http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p.total.Add(1)
			if r.Method == http.MethodHead && byTag.MatchString(r.URL.Path) {
				p.tags.Add(1)
			}
			rp.ServeHTTP(w, r)
		}))
	}()
	return p, nil
}
