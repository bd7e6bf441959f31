package warm

import "github.com/prometheus/client_golang/prometheus"

// WarmBytesOf and DurationOf are metric series for tests.
func WarmBytesOf(host string) prometheus.Counter { return warmBytes.WithLabelValues(host) }

func DurationOf(host, outcome string) prometheus.Metric {
	return warmDuration.WithLabelValues(host, outcome).(prometheus.Metric)
}
