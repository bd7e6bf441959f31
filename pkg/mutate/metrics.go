package mutate

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Counters live on controller-runtime's registry, next to its webhook latency and in-flight
// metrics, so one scrape of /metrics shows both. Labels are bounded: no image names.
var (
	mutationsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pullgate_mutations_total",
		Help: "Changes made (mode=enforce) or reported (mode=audit), by action: rewrite, pin, pullPolicy, pullSecret.",
	}, []string{"action", "mode"})
	skippedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pullgate_admission_skipped_total",
		Help: "Admissions passed through untouched, by reason.",
	}, []string{"reason"})
	unpinnedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pullgate_unpinned_images_total",
		Help: "Images that could not be pinned to a digest, by what happened to the pod: kept (admitted with the tag) or denied.",
	}, []string{"onError"})
	registerOnce sync.Once
)

func registerMetrics() {
	registerOnce.Do(func() {
		metrics.Registry.MustRegister(mutationsTotal, skippedTotal, unpinnedTotal)
	})
}
