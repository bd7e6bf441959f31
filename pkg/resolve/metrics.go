package resolve

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// otherRegistry labels every host that is not in Options.Registries. Hosts come from pod
// specs; labelling them verbatim would let any pod author grow the series count.
const otherRegistry = "other"

// Outcomes of one Resolve call, the outcome label of pullgate_resolve_duration_seconds.
const (
	outcomeHit          = "hit"          // fresh cache entry
	outcomeResolved     = "resolved"     // asked the registry (or joined a call that did)
	outcomeFallback     = "fallback"     // resolved through the upstream, verified on the mirror
	outcomeStale        = "stale"        // registry failed, expired entry served
	outcomeNotFound     = "not_found"    // includes negative cache hits
	outcomeUnauthorized = "unauthorized" //
	outcomeTimeout      = "timeout"      //
	outcomeCircuitOpen  = "circuit_open" //
	outcomeCanceled     = "canceled"     //
	outcomeForbidden    = "forbidden"    // ErrForbiddenAddress: refused by policy, nothing sent
	outcomeError        = "error"        // ErrRegistry
	outcomeDiverged     = "diverged"     // ErrDiverged: digestMismatch Upstream, the mirror lacks the upstream's digest
)

type metrics struct {
	duration    *prometheus.HistogramVec
	cache       *prometheus.CounterVec
	requests    *prometheus.CounterVec
	circuitOpen *prometheus.GaugeVec
	firstSight  *prometheus.CounterVec
	mismatch    *prometheus.CounterVec
}

var (
	metricsOnce sync.Once
	metricsAll  *metrics
)

// sharedMetrics returns the package's collectors, registered on controller-runtime's registry
// the first time a Resolver is made. Every Resolver in the process shares them, which is what
// a reload (a new Options, same process) needs.
func sharedMetrics() *metrics {
	metricsOnce.Do(func() {
		m := &metrics{
			duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
				Name:    "pullgate_resolve_duration_seconds",
				Help:    "Time to resolve a tag to a digest, by registry host and outcome.",
				Buckets: []float64{.0005, .001, .005, .025, .1, .25, .5, 1, 2.5, 5, 10},
			}, []string{"registry", "outcome"}),
			cache: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "pullgate_resolve_cache_total",
				Help: "Resolution cache lookups: hit, miss, stale (served after a registry failure), negative (cached not-found).",
			}, []string{"result"}),
			requests: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "pullgate_registry_requests_total",
				Help: "HTTP requests to registries, by host, method and status code (\"error\" when no response, \"forbidden\" when refused before sending: an address the policy does not allow).",
			}, []string{"registry", "method", "code"}),
			circuitOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Name: "pullgate_registry_circuit_open",
				Help: "Open circuit breakers per registry host (0 or 1; the \"other\" host counts all unlisted ones).",
			}, []string{"registry"}),
		}
		m.firstSight = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pullgate_resolve_first_sight_misses_total",
			Help: "Resolutions whose caller's deadline passed with nothing in the cache to serve, by registry host: the image was admitted unpinned (a background lookup may still fill the cache).",
		}, []string{"registry"})
		m.mismatch = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pullgate_digest_mismatch_total",
			Help: "Tags whose digest on a mirror differs from the upstream's, by mirror host and likely cause (conversion, trimmed-index, differs); each mirror digest counts once.",
		}, []string{"mirror", "cause"})
		crmetrics.Registry.MustRegister(m.duration, m.cache, m.requests, m.circuitOpen, m.firstSight, m.mismatch)
		metricsAll = m
	})
	return metricsAll
}
