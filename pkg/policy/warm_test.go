package policy_test

import (
	"os"
	"testing"
	"time"

	"github.com/pullgate/pullgate/pkg/policy"
)

// Warming is off unless asked for; a mirror's own warm fields override the top level's, and the
// rest is inherited.
func TestWarmSettings(t *testing.T) {
	t.Parallel()
	c, err := policy.Check([]byte("apiVersion: pullgate.dev/v1alpha1\nkind: Policy\nmirrors: [{registry: docker.io, mirror: m.example.com}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.WarmEnabled() {
		t.Error("warming is on by default")
	}
	def := c.Warm(c.Mirrors()[0])
	if def.Mode != policy.WarmFetch || def.Concurrency != policy.DefaultWarmConcurrency || def.BudgetPerHour != 200<<30 ||
		def.StallTimeout != policy.DefaultWarmStall || def.MinRate != 1<<20 {
		t.Errorf("defaults: %+v", def)
	}

	data, err := os.ReadFile("testdata/valid-warm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err = policy.Check(data)
	if err != nil {
		t.Fatal(err)
	}
	if !c.WarmEnabled() {
		t.Error("warming is off")
	}
	want := map[string]policy.WarmSettings{
		"docker.io": {Enabled: true, Mode: policy.WarmFetch, Concurrency: 4, BudgetPerHour: 100 << 30, StallTimeout: 90 * time.Second, Timeout: time.Minute, MinRate: 2 << 20},
		"nvcr.io":   {Enabled: true, Mode: policy.WarmFetch, Concurrency: 1, BudgetPerHour: 500 << 30, StallTimeout: 90 * time.Second, Timeout: time.Minute, MinRate: 2 << 20},
		"quay.io":   {Enabled: true, Mode: policy.WarmCheck, Concurrency: 4, BudgetPerHour: 100 << 30, StallTimeout: 90 * time.Second, Timeout: time.Minute, MinRate: 2 << 20},
		"ghcr.io":   {Enabled: false, Mode: policy.WarmFetch, Concurrency: 4, BudgetPerHour: 100 << 30, StallTimeout: 90 * time.Second, Timeout: time.Minute, MinRate: 2 << 20},
	}
	for _, m := range c.Mirrors() {
		if got := c.Warm(m); got != want[m.Registry] {
			t.Errorf("%s: %+v, want %+v", m.Registry, got, want[m.Registry])
		}
	}
	// 1 GiB at 2 MiB/s is 512 s on top of the minute.
	if d := want["docker.io"].Deadline(1 << 30); d != time.Minute+512*time.Second {
		t.Errorf("Deadline(1 GiB) = %s", d)
	}
}
