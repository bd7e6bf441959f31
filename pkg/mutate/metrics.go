package mutate

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pullgate/pullgate/internal/promreg"
)

// Labels are bounded: no image names.
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
)

// RegisterMetrics adds the handler's counters to reg: in the webhook, controller-runtime's
// registry, so one scrape shows them beside its webhook metrics. Registering them on the same
// registry again does nothing.
func RegisterMetrics(reg prometheus.Registerer) error {
	return promreg.Register(reg, "admission", mutationsTotal, skippedTotal, unpinnedTotal, missingSecretsTotal, platformMismatchTotal, namespaceOverridesTotal)
}
