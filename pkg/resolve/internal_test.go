package resolve

import (
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
)

// Insecure registries get references that allow plain HTTP; others keep https, even when the
// caller parsed them with name.Insecure.
func TestConfigTagInsecure(t *testing.T) {
	t.Parallel()
	r, err := New(Options{Registries: map[string]Registry{"plain.example:5000": {Insecure: true}}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := r.cfg.Load()
	tests := []struct {
		ref, wantScheme string
		parse           []name.Option
	}{
		{"plain.example:5000/app:v1", "http", nil},
		{"secure.example/app:v1", "https", nil},
		{"secure.example/app:v1", "https", []name.Option{name.Insecure}},
	}
	for _, tt := range tests {
		in, err := name.NewTag(tt.ref, tt.parse...)
		if err != nil {
			t.Fatal(err)
		}
		out, err := cfg.tag(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := out.Context().Registry.Scheme(); got != tt.wantScheme {
			t.Errorf("%s: scheme %s, want %s", tt.ref, got, tt.wantScheme)
		}
		if out.Name() != in.Name() {
			t.Errorf("%s: name changed to %s", in, out)
		}
	}
}

// The breaker's states, step by step: closed, open after the threshold, one half-open probe,
// reopened by a failed probe, closed by a good one.
func TestBreakerStates(t *testing.T) {
	t.Parallel()
	const threshold, cooldown = 2, 10 * time.Second
	t0 := time.Unix(0, 0)
	b := &breaker{}
	steps := []struct {
		name      string
		at        time.Duration
		wantAllow bool
		failed    bool // outcome reported when allowed
		wantDelta int
	}{
		{"closed", 0, true, true, 0},
		{"threshold reached", 1 * time.Second, true, true, 1},
		{"open", 2 * time.Second, false, false, 0},
		{"open until cooldown", 10 * time.Second, false, false, 0},
		{"probe", 11 * time.Second, true, true, 0},
		{"reopened", 12 * time.Second, false, false, 0},
		{"second probe", 21 * time.Second, true, false, -1},
		{"closed again", 21 * time.Second, true, true, 0},
		{"one failure does not open", 22 * time.Second, true, false, 0},
	}
	for _, s := range steps {
		now := t0.Add(s.at)
		ok, _ := b.allow(now)
		if ok != s.wantAllow {
			t.Fatalf("%s: allow = %v, want %v", s.name, ok, s.wantAllow)
		}
		if !ok {
			continue
		}
		if d := b.done(now, s.failed, threshold, cooldown); d != s.wantDelta {
			t.Fatalf("%s: gauge delta %d, want %d", s.name, d, s.wantDelta)
		}
	}
	// While the probe is out, everyone else still fails fast.
	b = &breaker{}
	b.done(t0, true, 1, cooldown)
	if ok, _ := b.allow(t0.Add(cooldown)); !ok {
		t.Fatal("probe refused")
	}
	if ok, _ := b.allow(t0.Add(cooldown)); ok {
		t.Error("a second call went through while the probe was out")
	}
}
