package prepull

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pullgate/pullgate/internal/promreg"
)

// Metrics are labelled by group, which the policy bounds (at most policy.MaxPrepullGroups),
// never by image reference.
var (
	nodesGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pullgate_prepull_nodes",
		Help: "Nodes of a pre-pull group, by state: wanted (selected), pulled, pulling, failed.",
	}, []string{"group", "state"})
	repinGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pullgate_prepull_last_repin_timestamp_seconds",
		Help: "When a pre-pull group's pinned references last changed (Unix time).",
	}, []string{"group"})
	unpinnedGauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "pullgate_prepull_unresolved_images",
		Help: "Images of a pre-pull group whose tag could not be resolved at the last attempt (kept at their last digest, or left out when they never had one).",
	}, []string{"group"})
	resolveFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pullgate_prepull_resolve_failures_total",
		Help: "Failed resolutions of pre-pull images, by group.",
	}, []string{"group"})
)

// RegisterMetrics adds the pre-pull metrics to reg (controller-runtime's registry); registering
// twice is not an error.
func RegisterMetrics(reg prometheus.Registerer) error {
	return promreg.Register(reg, "pre-pull", nodesGauge, repinGauge, unpinnedGauge, resolveFailures)
}

func recordStatus(group string, s Status) {
	nodesGauge.WithLabelValues(group, "wanted").Set(float64(s.Wanted))
	nodesGauge.WithLabelValues(group, "pulled").Set(float64(s.Pulled))
	nodesGauge.WithLabelValues(group, "pulling").Set(float64(s.Pulling))
	nodesGauge.WithLabelValues(group, "failed").Set(float64(s.Failed))
}

// forget drops a removed group's series.
func forget(group string) {
	for _, st := range []string{"wanted", "pulled", "pulling", "failed"} {
		nodesGauge.DeleteLabelValues(group, st)
	}
	repinGauge.DeleteLabelValues(group)
	unpinnedGauge.DeleteLabelValues(group)
	resolveFailures.DeleteLabelValues(group)
}
