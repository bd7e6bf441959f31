package warm

import "github.com/prometheus/client_golang/prometheus"

// WarmBytesOf and DurationOf are metric series for tests.
func WarmBytesOf(host string) prometheus.Counter { return warmBytes.WithLabelValues(host) }

func DurationOf(host, outcome string) prometheus.Metric {
	return warmDuration.WithLabelValues(host, outcome).(prometheus.Metric)
}

// Pending counts the digests not done with yet: queued, waiting for a retry, or being warmed.
func Pending(q *Queue) int {
	q.init()
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, it := range q.items {
		if it.state != done {
			n++
		}
	}
	return n
}
