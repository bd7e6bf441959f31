package warm

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pullgate/pullgate/internal/promreg"
)

// Metrics are labelled by mirror host, which the policy bounds, and outcome; never by image.
var (
	warmDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "pullgate_warm_duration_seconds",
		Help:    "Time to warm one image through its mirror, by mirror host and outcome (warmed, checked, a contract outcome such as rate_limited or digest_mismatch, stalled, deadline, over_budget, node_pulling).",
		Buckets: []float64{.1, .5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600},
	}, []string{"mirror", "outcome"})
	warmBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pullgate_warm_bytes_total",
		Help: "Blob bytes read through mirrors by warming, by mirror host.",
	}, []string{"mirror"})
	warmBlobs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pullgate_warm_blobs_total",
		Help: "Blobs read to the end (or found, in Check mode) by warming, by mirror host.",
	}, []string{"mirror"})
	warmQueued = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pullgate_warm_queued",
		Help: "Images waiting to be warmed (including those waiting for a retry), by mirror host.",
	}, []string{"mirror"})
	warmActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pullgate_warm_active",
		Help: "Images being warmed now, by mirror host.",
	}, []string{"mirror"})
)

// RegisterMetrics adds the warm metrics to reg (controller-runtime's registry); registering
// twice is not an error.
func RegisterMetrics(reg prometheus.Registerer) error {
	return promreg.Register(reg, "warm", warmDuration, warmBytes, warmBlobs, warmQueued, warmActive)
}
