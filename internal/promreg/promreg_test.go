package promreg_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pullgate/pullgate/internal/promreg"
)

func TestRegister(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "pullgate_test_total", Help: "test"})
	if err := promreg.Register(reg, "test", c); err != nil {
		t.Fatal(err)
	}
	if err := promreg.Register(reg, "test", c); err != nil {
		t.Errorf("registering the same collector again: %v, want nil", err)
	}
	other := prometheus.NewCounter(prometheus.CounterOpts{Name: "pullgate_test_total", Help: "test"})
	if err := promreg.Register(reg, "test", other); err == nil {
		t.Error("another collector under the same name was accepted")
	}
}
