package report

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/policy"
)

// secretsIn answers from a fixed map: namespace/name -> exists; absent means unknown.
type secretsIn map[string]bool

func (s secretsIn) Exists(_ context.Context, namespace, name string) (bool, bool) {
	exists, known := s[namespace+"/"+name]
	return exists, known
}

// platformsOf answers by digest; a digest absent fails to list, as a registry that is down.
type platformsOf map[string][]contract.Platform

func (p platformsOf) Platforms(_ context.Context, ref name.Digest) ([]contract.Platform, error) {
	if have, ok := p[ref.DigestStr()]; ok {
		return have, nil
	}
	return nil, errors.New("registry unavailable")
}

func (p platformsOf) CachedPlatforms(name.Digest) ([]contract.Platform, bool) { return nil, false }

// The controller's reports carry what admission warns of beyond its changes: an injected pull
// secret missing from the namespace, and a pinned digest short of a required platform; a
// warning where opting in or enforcing would bring it, a failure in an enforce namespace. A
// secret or digest that cannot be told about gives no result.
func TestChecksInReports(t *testing.T) {
	t.Parallel()
	pol, err := policy.Check([]byte(testPolicy + "platforms: {required: [linux/amd64, linux/arm64]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	amd64, arm64 := contract.Platform{OS: "linux", Architecture: "amd64"}, contract.Platform{OS: "linux", Architecture: "arm64"}
	narrow := fmt.Sprintf("sha256:%064x", 1) // what mutated() pins to: amd64 only
	nss := []Namespace{
		{Name: "plain"},
		{Name: "enf", Labels: map[string]string{policy.ModeLabel: "enforce"}},
		{Name: "unknown", Labels: map[string]string{policy.ModeLabel: "enforce"}},
	}
	pods := []*corev1.Pod{
		newPod("plain", "web", "nginx:1.27"),
		newPod("enf", "pinned", "nginx:1.27", mutated(pol, pol.Generation())),
		newPod("unknown", "pinned", "nginx:1.27", mutated(pol, pol.Generation())),
		newPod("unknown", "elsewhere", "registry.example.org/app@"+narrow),
	}
	s := Plan(pol, nss, pods, Options{})
	outcomes := answers(s)
	var wide string // the digest answers() gives nginx:1.27 in plain
	for _, o := range outcomes {
		wide = o.Digest
	}
	checks := s.Inspect(t.Context(), outcomes, Inspector{
		Secrets:   secretsIn{"plain/mirror-pull": true, "enf/mirror-pull": false},
		Platforms: platformsOf{narrow: {amd64}, wide: {amd64, arm64}},
		Timeout:   time.Minute,
	})
	f := s.FinishWith(outcomes, checks)
	got := map[string][]string{}
	for _, ns := range f.Namespaces {
		for _, w := range ns.Workloads {
			for _, fd := range w.Findings {
				if fd.Rule == RuleMissingPullSecret || fd.Rule == RulePlatformMismatch {
					got[ns.Name] = append(got[ns.Name], fmt.Sprintf("%s %s %s %s: %s", w.Name, fd.Rule, fd.Result, fd.From, fd.Reason))
				}
			}
		}
		if want := len(got[ns.Name]); ns.Counts.MissingPullSecret+ns.Counts.PlatformMismatch != want || (ns.Flagged > 0) != (want > 0) {
			t.Errorf("%s: counts %+v, flagged %d, for %d results", ns.Name, ns.Counts, ns.Flagged, want)
		}
	}
	want := map[string][]string{
		"enf": {
			"pinned platform-mismatch fail mirror.example.com/hub/library/nginx@" + narrow + ": digest " + narrow + " covers only linux/amd64, not linux/arm64: a node of those platforms would fail to run it (exec format error)",
			"pinned missing-pull-secret fail mirror-pull: pull secret mirror-pull does not exist in namespace enf: the kubelet will fail to pull from mirror.example.com with 401 Unauthorized",
		},
		// unknown: the secret's existence cannot be told; the digest elsewhere is on a registry
		// only the pod names, never asked; the mirror's digest is listed and short.
		"unknown": {"pinned platform-mismatch fail mirror.example.com/hub/library/nginx@" + narrow + ": digest " + narrow + " covers only linux/amd64, not linux/arm64: a node of those platforms would fail to run it (exec format error)"},
	}
	for ns := range map[string]bool{"plain": true, "enf": true, "unknown": true} {
		g, w := strings.Join(sortedCopy(got[ns]), "\n"), strings.Join(sortedCopy(want[ns]), "\n")
		if g != w {
			t.Errorf("%s:\n%s\nwant:\n%s", ns, g, w)
		}
	}
	reports, cluster := Reports(f, time.Unix(0, 0))
	for _, r := range reports {
		for _, res := range r.Results {
			if res.Rule == RuleMissingPullSecret && (res.Properties["secret"] != "mirror-pull" || !strings.Contains(res.Properties["reason"], "401 Unauthorized")) {
				t.Errorf("missing-pull-secret result: %+v", res.Properties)
			}
			if res.Rule == RulePlatformMismatch && (res.Properties["image"] == "" || !strings.Contains(res.Properties["reason"], "exec format error")) {
				t.Errorf("platform-mismatch result: %+v", res.Properties)
			}
		}
	}
	if cluster.Summary.Pass != 0 {
		t.Errorf("cluster summary passes %d namespaces; every one has a result", cluster.Summary.Pass)
	}
	if empty := s.FinishWith(outcomes, Checks{}); len(flaggedIn(empty)) > 0 {
		t.Errorf("results without checks: %v", flaggedIn(empty))
	}
}

func flaggedIn(f *Findings) []string {
	var out []string
	for _, ns := range f.Namespaces {
		if ns.Flagged > 0 {
			out = append(out, ns.Name)
		}
	}
	return out
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	slices.Sort(out)
	return out
}

var _ mutate.SecretChecker = secretsIn(nil)
var _ contract.PlatformLister = platformsOf(nil)
