package mutate

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pullgate/pullgate/pkg/policy"
)

var namespaceOverridesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "pullgate_namespace_overrides_total",
	Help: "Namespace override annotations seen at admission, by annotation and outcome: applied, or why it was ignored (not-allowed, invalid, widens, not-listed, duplicate).",
}, []string{"annotation", "outcome"})

// overrideWarnings are the namespace's ignored overrides in words: the tenant who set an
// annotation learns at admission that it does nothing, and why.
func overrideWarnings(namespace string, overrides []policy.Override) []string {
	var out []string
	for _, o := range overrides {
		if !o.Applied() {
			out = append(out, fmt.Sprintf("namespace %s: annotation %s=%q ignored: %s", namespace, o.Annotation, clip(o.Value), o.Why))
		}
	}
	return out
}

// countOverrides counts what became of each of the namespace's overrides.
func countOverrides(overrides []policy.Override) {
	for _, o := range overrides {
		namespaceOverridesTotal.WithLabelValues(o.Annotation, o.Outcome).Inc()
	}
}
