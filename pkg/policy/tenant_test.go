package policy_test

import (
	"cmp"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/pullgate/pullgate/pkg/policy"
)

func TestTenantOverrides(t *testing.T) {
	t.Parallel()
	allowed, err := policy.Load("testdata/valid-tenant-overrides.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The same policy with every override off, as a policy that never mentions them.
	p := allowed.Policy()
	p.TenantOverrides = policy.TenantOverrides{}
	closed, err := p.Compile()
	if err != nil {
		t.Fatal(err)
	}
	enforce := map[string]string{policy.ModeLabel: "enforce"}
	audit := map[string]string{policy.ModeLabel: "audit"}
	cases := map[string]struct {
		pol         *policy.Compiled
		ns          string
		labels      map[string]string
		annotations map[string]string
		mode        policy.Mode
		podOptOut   bool
		preferred   map[string]string // registry -> mirror host/prefix
		outcomes    []string          // annotation=outcome, in order
	}{
		"none": {pol: allowed, labels: enforce, mode: policy.ModeEnforce},
		"audit narrows enforce": {pol: allowed, labels: enforce, annotations: map[string]string{policy.ModeAnnotation: "Audit"},
			mode: policy.ModeAudit, outcomes: []string{"pullgate.dev/mode=applied"}},
		"audit narrows a rule's enforce": {pol: allowed, ns: "platform-a", labels: audit, annotations: map[string]string{policy.ModeAnnotation: "audit"},
			mode: policy.ModeAudit, outcomes: []string{"pullgate.dev/mode=applied"}},
		"enforce never widens audit": {pol: allowed, labels: audit, annotations: map[string]string{policy.ModeAnnotation: "Enforce"},
			mode: policy.ModeAudit, outcomes: []string{"pullgate.dev/mode=widens"}},
		"enforce on enforce changes nothing": {pol: allowed, labels: enforce, annotations: map[string]string{policy.ModeAnnotation: "Enforce"},
			mode: policy.ModeEnforce, outcomes: []string{"pullgate.dev/mode=applied"}},
		"mode not a mode": {pol: allowed, labels: enforce, annotations: map[string]string{policy.ModeAnnotation: "Off"},
			mode: policy.ModeEnforce, outcomes: []string{"pullgate.dev/mode=invalid"}},
		"audit not allowed": {pol: closed, labels: enforce, annotations: map[string]string{policy.ModeAnnotation: "Audit"},
			mode: policy.ModeEnforce, outcomes: []string{"pullgate.dev/mode=not-allowed"}},
		"pod opt-out": {pol: allowed, labels: enforce, annotations: map[string]string{policy.PodOptOutAnnotation: "true"},
			mode: policy.ModeEnforce, podOptOut: true, outcomes: []string{"pullgate.dev/allow-pod-opt-out=applied"}},
		"pod opt-out false": {pol: allowed, labels: enforce, annotations: map[string]string{policy.PodOptOutAnnotation: "false"},
			mode: policy.ModeEnforce, outcomes: []string{"pullgate.dev/allow-pod-opt-out=applied"}},
		"pod opt-out not a bool": {pol: allowed, labels: enforce, annotations: map[string]string{policy.PodOptOutAnnotation: "yes"},
			mode: policy.ModeEnforce, outcomes: []string{"pullgate.dev/allow-pod-opt-out=invalid"}},
		"pod opt-out not allowed": {pol: closed, labels: enforce, annotations: map[string]string{policy.PodOptOutAnnotation: "true"},
			mode: policy.ModeEnforce, outcomes: []string{"pullgate.dev/allow-pod-opt-out=not-allowed"}},
		"mirror by host and prefix": {pol: allowed, labels: enforce, annotations: map[string]string{policy.MirrorAnnotation: "harbor.example.com/ghcr/"},
			mode: policy.ModeEnforce, preferred: map[string]string{"ghcr.io": "harbor.example.com/ghcr"}, outcomes: []string{"pullgate.dev/mirror=applied"}},
		// A host alone picks its mirror of every registry it serves.
		"mirror by host": {pol: allowed, labels: enforce, annotations: map[string]string{policy.MirrorAnnotation: "harbor.example.com"},
			mode:      policy.ModeEnforce,
			preferred: map[string]string{"docker.io": "harbor.example.com/dockerhub", "ghcr.io": "harbor.example.com/ghcr"},
			outcomes:  []string{"pullgate.dev/mirror=applied"}},
		"mirrors listed and not": {pol: allowed, labels: enforce, annotations: map[string]string{policy.MirrorAnnotation: "quay-cache.example.com:5000, evil.example.com,harbor.example.com/dockerhub, harbor.example.com/dockerhub"},
			mode:      policy.ModeEnforce,
			preferred: map[string]string{"quay.io": "quay-cache.example.com:5000", "docker.io": "harbor.example.com/dockerhub"},
			outcomes:  []string{"pullgate.dev/mirror=applied", "pullgate.dev/mirror=not-listed", "pullgate.dev/mirror=applied", "pullgate.dev/mirror=duplicate"}},
		// A port is part of the host: without it, it names no listed mirror.
		"mirror without its port": {pol: allowed, labels: enforce, annotations: map[string]string{policy.MirrorAnnotation: "quay-cache.example.com"},
			mode: policy.ModeEnforce, outcomes: []string{"pullgate.dev/mirror=not-listed"}},
		"mirror empty": {pol: allowed, labels: enforce, annotations: map[string]string{policy.MirrorAnnotation: " , "},
			mode: policy.ModeEnforce, outcomes: []string{"pullgate.dev/mirror=invalid"}},
		"mirror not allowed": {pol: closed, labels: enforce, annotations: map[string]string{policy.MirrorAnnotation: "harbor.example.com"},
			mode: policy.ModeEnforce, outcomes: []string{"pullgate.dev/mirror=not-allowed"}},
		"all three": {pol: allowed, labels: enforce, annotations: map[string]string{policy.ModeAnnotation: "Audit", policy.PodOptOutAnnotation: "true", policy.MirrorAnnotation: "harbor.example.com/ghcr"},
			mode: policy.ModeAudit, podOptOut: true, preferred: map[string]string{"ghcr.io": "harbor.example.com/ghcr"},
			outcomes: []string{"pullgate.dev/mode=applied", "pullgate.dev/allow-pod-opt-out=applied", "pullgate.dev/mirror=applied"}},
		// A rule's tenantOverrides replace the policy's: none for prod.
		"rule allows none": {pol: allowed, labels: map[string]string{policy.ModeLabel: "enforce", "env": "prod"}, annotations: map[string]string{policy.ModeAnnotation: "Audit", policy.PodOptOutAnnotation: "true"},
			mode: policy.ModeEnforce, outcomes: []string{"pullgate.dev/mode=not-allowed", "pullgate.dev/allow-pod-opt-out=not-allowed"}},
		"unrelated annotations": {pol: closed, labels: enforce, annotations: map[string]string{"team": "a", "pullgate.dev/other": "x"}, mode: policy.ModeEnforce},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			d := tc.pol.Decide(cmp.Or(tc.ns, "web"), tc.labels, tc.annotations)
			if d.Mode != tc.mode || d.PodOptOut != tc.podOptOut {
				t.Errorf("mode %s, podOptOut %v; want %s, %v", d.Mode, d.PodOptOut, tc.mode, tc.podOptOut)
			}
			got := map[string]string{}
			for reg, m := range d.PreferredMirrors {
				got[reg] = strings.TrimSuffix(m.Host+"/"+m.Prefix, "/")
			}
			if !maps.Equal(got, tc.preferred) && (len(got) > 0 || len(tc.preferred) > 0) {
				t.Errorf("preferred mirrors %v, want %v", got, tc.preferred)
			}
			var outcomes []string
			for _, o := range d.Overrides {
				outcomes = append(outcomes, o.Annotation+"="+o.Outcome)
				if o.Applied() != (o.Why == "") {
					t.Errorf("%s: applied %v with why %q", o.Annotation, o.Applied(), o.Why)
				}
			}
			if !slices.Equal(outcomes, tc.outcomes) {
				t.Errorf("outcomes %v, want %v", outcomes, tc.outcomes)
			}
		})
	}
}

// TestListedMirror: a namespace may only pick a mirror the policy lists for the image's
// registry, by host or host/prefix, Docker Hub's aliases alike.
func TestListedMirror(t *testing.T) {
	t.Parallel()
	c, err := policy.Load("testdata/valid-tenant-overrides.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		registry, mirror string
		want             bool
	}{
		{"docker.io", "harbor.example.com/dockerhub", true},
		{"index.docker.io", "harbor.example.com", true},
		{"registry-1.docker.io", "harbor.example.com/dockerhub/", true},
		{"docker.io", "harbor.example.com/ghcr", false}, // ghcr.io's mirror, not Docker Hub's
		{"docker.io", "harbor.example.com/docker", false},
		{"quay.io", "quay-cache.example.com:5000", true},
		{"quay.io", "quay-cache.example.com", false},
		{"gcr.io", "harbor.example.com", false}, // no mirror listed for the registry
		{"docker.io", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.registry+" "+tc.mirror, func(t *testing.T) {
			t.Parallel()
			m, ok := c.ListedMirror(tc.registry, tc.mirror)
			if ok != tc.want {
				t.Fatalf("ListedMirror(%q, %q) = %v, want %v", tc.registry, tc.mirror, ok, tc.want)
			}
			if ok && m.Registry != policy.CanonicalRegistry(tc.registry) {
				t.Errorf("mirror of %s, want %s", m.Registry, tc.registry)
			}
			d := c.Decide("web", nil, map[string]string{policy.MirrorAnnotation: tc.mirror})
			if _, picked := d.PreferredMirror(tc.registry); picked != tc.want {
				t.Errorf("Decide picked a mirror for %s: %v, want %v", tc.registry, picked, tc.want)
			}
		})
	}
}
