package policy_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/pullgate/pullgate/pkg/policy"
)

// TestPrepullLimits: lists too long for one DaemonSet, and too many groups, are errors with
// their field path; the limits themselves are accepted.
func TestPrepullLimits(t *testing.T) {
	t.Parallel()
	images := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "\n      - registry.example.com/img-%d:v1", i)
		}
		return b.String()
	}
	groups := func(n, imgs int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "\n  - name: g%d\n    images:%s", i, images(imgs))
		}
		return b.String()
	}
	for _, tc := range []struct {
		name, prepull, want string
	}{
		{"images at the limit", groups(1, policy.MaxPrepullImages), ""},
		{"too many images", groups(1, policy.MaxPrepullImages+1), "prepull[0].images: Too many: 33: must have at most 32 items"},
		{"groups at the limit", groups(policy.MaxPrepullGroups, 1), ""},
		{"too many groups", groups(policy.MaxPrepullGroups+1, 1), "prepull: Too many: 51: must have at most 50 items"},
		{"name too long", "\n  - name: " + strings.Repeat("a", 41) + "\n    images: [busybox]", "prepull[0].name: Too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			doc := "apiVersion: pullgate.dev/v1alpha1\nkind: Policy\nprepull:" + tc.prepull + "\n"
			c, err := policy.Check([]byte(doc))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				for _, g := range c.Policy().Prepull {
					if g.MaxUnavailable == nil || g.MaxUnavailable.IntValue() != 1 {
						t.Errorf("group %s: maxUnavailable = %v, want the default 1", g.Name, g.MaxUnavailable)
					}
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestPrepullStartupTaint: startupTaint defaults to pullgate.dev/prepull:NoSchedule with a 20m
// timeout; bad keys, values, effects and timeouts, and a timeout without a taint, are errors
// with their field paths.
func TestPrepullStartupTaint(t *testing.T) {
	t.Parallel()
	doc := func(fields string) []byte {
		return []byte("apiVersion: pullgate.dev/v1alpha1\nkind: Policy\nprepull:\n  - name: g\n    images: [busybox]\n" + fields)
	}
	c, err := policy.Check(doc("    startupTaint: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	g := c.Policy().Prepull[0]
	if g.StartupTaint.Key != policy.PrepullTaintKey || g.StartupTaint.Effect != "NoSchedule" || g.StartupTaintTimeout.Duration != policy.DefaultStartupTaintTimeout {
		t.Errorf("defaults: %+v %v, want %s:NoSchedule and %s", g.StartupTaint, g.StartupTaintTimeout, policy.PrepullTaintKey, policy.DefaultStartupTaintTimeout)
	}
	if _, err := policy.Check(doc("    startupTaint: {key: example.com/warming, value: pending, effect: NoExecute}\n    startupTaintTimeout: 1h\n")); err != nil {
		t.Errorf("a full startupTaint: %v", err)
	}
	for _, tc := range []struct{ fields, want string }{
		{"    startupTaintTimeout: 5m\n", "prepull[0].startupTaintTimeout: Forbidden: only with startupTaint"},
		{"    startupTaint: {key: \"bad key!\"}\n", `prepull[0].startupTaint.key: Invalid value: "bad key!"`},
		{"    startupTaint: {value: \"not a value!\"}\n", `prepull[0].startupTaint.value: Invalid value: "not a value!"`},
		{"    startupTaint: {effect: PreferNoSchedule}\n", `prepull[0].startupTaint.effect: Unsupported value: "PreferNoSchedule"`},
		{"    startupTaint: {}\n    startupTaintTimeout: 0s\n", `prepull[0].startupTaintTimeout: Invalid value: "0s"`},
		{"    startupTaint: {}\n    startupTaintTimeout: 48h\n", `prepull[0].startupTaintTimeout: Invalid value: "48h0m0s"`},
		{"    startupTaint: {keys: x}\n", `unknown field`},
	} {
		if _, err := policy.Check(doc(tc.fields)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.fields, err, tc.want)
		}
	}
}
