// Package promreg registers pullgate's Prometheus collectors on a registry (controller-runtime's
// in the binaries), the one way every package does it.
package promreg

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register adds each collector to reg. Registering the same collector again is not an error,
// so a package's RegisterMetrics may run more than once (tests, several managers); another
// collector under the same name is, since its series would silently never be exported.
func Register(reg prometheus.Registerer, what string, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) || already.ExistingCollector != c {
				return fmt.Errorf("registering %s metrics: %w", what, err)
			}
		}
	}
	return nil
}
