package resolve_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pullgate/pullgate/pkg/resolve"
)

// Requests, outcomes and cache results are counted, labelled by listed registry host; hosts
// not listed share "other". (The unlisted registry serves plain HTTP, which a host not listed
// as insecure does not get: its resolution fails, and is counted all the same. It is on
// loopback, which takes AllowPrivateUnlisted to reach at all.)
func TestMetrics(t *testing.T) {
	t.Parallel()
	listed, unlisted := newRegistry(t), newRegistry(t)
	listed.push(t, "app:v1")
	unlisted.push(t, "app:v1")
	r := newResolver(t, newClock(), resolve.Options{AllowPrivateUnlisted: true}, listed) // unlisted is not in Registries
	hitsBefore := gauge(t, "pullgate_resolve_cache_total", prometheus.Labels{"result": "hit"})
	otherBefore := gauge(t, "pullgate_resolve_duration_seconds", prometheus.Labels{"registry": "other", "outcome": "error"})
	otherRequestsBefore := gauge(t, "pullgate_registry_requests_total", prometheus.Labels{"registry": "other", "method": http.MethodGet, "code": "error"})

	for range 2 {
		if _, err := r.Resolve(context.Background(), request(listed.ref(t, "app:v1"))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Resolve(context.Background(), request(unlisted.ref(t, "app:v1"))); !errors.Is(err, resolve.ErrRegistry) {
		t.Fatalf("unlisted plain-HTTP registry: err = %v, want ErrRegistry", err)
	}

	tests := []struct {
		metric string
		labels prometheus.Labels
		want   float64
	}{
		{"pullgate_registry_requests_total", prometheus.Labels{"registry": listed.host, "method": http.MethodHead, "code": "200"}, 1},
		{"pullgate_resolve_duration_seconds", prometheus.Labels{"registry": listed.host, "outcome": "resolved"}, 1},
		{"pullgate_resolve_duration_seconds", prometheus.Labels{"registry": listed.host, "outcome": "hit"}, 1},
		{"pullgate_registry_requests_total", prometheus.Labels{"registry": unlisted.host, "method": http.MethodGet, "code": "error"}, 0},
		{"pullgate_resolve_duration_seconds", prometheus.Labels{"registry": unlisted.host, "outcome": "error"}, 0},
	}
	for _, tt := range tests {
		if got := gauge(t, tt.metric, tt.labels); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.metric, tt.labels, got, tt.want)
		}
	}
	// Other tests run alongside and share these series: they can only have grown.
	if got := gauge(t, "pullgate_resolve_cache_total", prometheus.Labels{"result": "hit"}); got < hitsBefore+1 {
		t.Errorf("cache hits %v, want at least %v", got, hitsBefore+1)
	}
	if got := gauge(t, "pullgate_resolve_duration_seconds", prometheus.Labels{"registry": "other", "outcome": "error"}); got < otherBefore+1 {
		t.Errorf("resolutions labelled other: %v, want at least %v", got, otherBefore+1)
	}
	if got := gauge(t, "pullgate_registry_requests_total", prometheus.Labels{"registry": "other", "method": http.MethodGet, "code": "error"}); got < otherRequestsBefore+1 {
		t.Errorf("requests labelled other: %v, want at least %v", got, otherRequestsBefore+1)
	}
}
