package policy_test

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/pullgate/pullgate/pkg/policy"
)

// wantProblems lists, per invalid file, problems that must be reported (field or message
// substrings, each with its line where the file has one). All of a file's problems come at once.
var wantProblems = map[string][]string{
	"invalid-unknown-field.yaml": {"line 5: mirrors[0].mirorr: unknown field", "line 4: mirrors[0].mirror: Required value"},
	// An unknown key is reported with every other problem, not alone (exactly these seven).
	"invalid-misspelt-and-six.yaml": {
		"line 3: mode: Unsupported value",
		"line 7: mirrors[0].insecrue: unknown field",
		"line 9: resolve.timeout: Invalid value",
		"line 10: resolve.onError: Unsupported value",
		"line 11: pullPolicy: Unsupported value",
		"line 12: imagePullSecrets[0]: Invalid value",
		"line 16: rules[0].mode: Unsupported value",
	},
	"invalid-many.yaml": {
		"line 1: apiVersion: Unsupported value",
		"line 3: mode: Unsupported value",
		"line 6: mirrors[0].mirror: Invalid value",
		"line 10: resolve.timeout: Invalid value",
		"line 11: resolve.cacheSize: Invalid value",
		"line 12: resolve.onError: Unsupported value",
		"line 13: pullPolicy: Unsupported value",
		"line 14: imagePullSecrets[0]: Invalid value",
		"line 14: imagePullSecrets[2]: Duplicate value",
		"line 16: rules[0]: Forbidden",
		"line 19: rules[1].name: Duplicate value",
		"line 19: rules[1]: Required value",
		"line 20: rules[1].mode: Unsupported value",
	},
	"invalid-duplicate-key.yaml": {"line 4", "already defined"},
	"invalid-mirror-loop.yaml":   {"mirrors[0].mirror: Invalid value", "mirrors[1].mirror: Invalid value"},
	"invalid-mirror-order.yaml": {
		`line 7: mirrors[1].mirror: Duplicate value: "m1.example.com/hub/ (mirrors[0] lists the same mirror for index.docker.io)"`,
		`line 9: mirrors[2].mirror: Invalid value: "m2.example.com": is on registry m2.example.com, which mirrors[3] mirrors itself`,
		`line 13: mirrors[4].mirror: Invalid value: "m1.example.com/hub": serves docker.io in mirrors[0]`,
	},
	"invalid-shared-host.yaml":   {"line 8: mirrors[1].mirror: Invalid value: \"harbor.example.com/ghcr\": shares host harbor.example.com with mirrors[0]"},
	"invalid-cachettl-zero.yaml": {"line 4: resolve.cacheTTL: Invalid value: \"0s\": must be positive", "line 5: resolve.maxStale: Invalid value"},
	"invalid-registries.yaml": {
		"line 7: registries[0].host: Invalid value: \"harbor.example.com\": is the host of mirrors[0]",
		"line 9: registries[2].host: Duplicate value",
		"line 10: registries[2].caBundle: Invalid value",
		"line 11: registries[3].host: Required value",
	},
	"invalid-not-yaml.yaml":      {"not valid YAML"},
	"invalid-empty.yaml":         {"file is empty"},
	"invalid-two-documents.yaml": {"more than one YAML document"},
	"invalid-wrong-type.yaml":    {`invalid duration "soon"`},
	"invalid-warm.yaml": {
		`line 7: mirrors[0].warm.mode: Unsupported value: "Sometimes"`,
		`line 8: mirrors[0].warm.concurrency: Invalid value: 0`,
		`line 11: warm.budgetPerHour: Invalid value: "0"`,
		`line 12: warm.stallTimeout: Invalid value: "0s"`,
		`line 13: warm.minBytesPerSecond: Invalid value: "-1"`,
		`line 14: warm.concurrency: Invalid value: 100`,
	},
	"invalid-exclude.yaml": {
		`line 5: exclude.imageRegexps[0]: Invalid value: "docker.io/library/postgres:(16": not an RE2 regular expression`,
		`line 6: exclude.imageRegexps[1]: Required value`,
		`line 8: exclude.owners[0]: Invalid value: "postgresql.cnpg.io/v1/Cluster": must be "Kind", "group/Kind" or "group/*", without a version`,
		`line 9: exclude.owners[1]: Invalid value: "postgresql.cnpg.io/cluster": kind "cluster" must be CamelCase`,
		`line 10: exclude.owners[2]: Invalid value: "Bad_Group!/Cluster": API group`,
		`line 12: exclude.owners[4]: Duplicate value`,
		`line 13: exclude.podSelector: Invalid value: "{}": an empty selector selects every pod`,
	},
	// Every owner form that is not "Kind", "group/Kind" or "group/*", and regular expressions
	// that are not RE2 on their own, each with its path and line (the last two owners are fine).
	"invalid-exclude-owners.yaml": {
		`line 6: exclude.imageRegexps[1]: Invalid value: "a)|(b": not an RE2 regular expression`,
		`line 7: exclude.imageRegexps[2]: Invalid value: "docker.io/library/nginx:1\\.2[7-8": not an RE2 regular expression`,
		`line 9: exclude.owners[0]: Invalid value: "*": "*" needs its API group`,
		`line 10: exclude.owners[1]: Invalid value: "/Deployment": the core group is written without a slash ("Deployment", not "/Deployment")`,
		`line 11: exclude.owners[2]: Invalid value: "apps/": no kind after "apps/"`,
		`line 12: exclude.owners[3]: Required value`,
		`line 13: exclude.owners[4]: Invalid value: "*/Cluster": API group "*"`,
		`line 14: exclude.owners[5]: Invalid value: "Apps/Deployment": API group "Apps"`,
		`line 15: exclude.owners[6]: Invalid value: "apps/v1/Deployment": must be "Kind", "group/Kind" or "group/*", without a version`,
	},
	"invalid-platforms.yaml": {
		`line 4: platforms.required[0]: Invalid value: "linux/arm64/v8": must be os/arch`,
		`line 4: platforms.required[2]: Duplicate value`,
		`line 5: platforms.onMismatch: Unsupported value: "Sometimes"`,
	},
	"invalid-digest-mismatch.yaml": {`line 4: resolve.digestMismatch: Unsupported value: "Newest": supported values: "Mirror", "Upstream"`},
	"invalid-sync-credentials.yaml": {
		`line 9: syncCredentials[0].from: Invalid value: "some-other-secret": is the credentialsSecret of no mirror or registry`,
		`line 11: syncCredentials[1].to: Invalid value: "harbor-robot": is injected into no pod`,
		`line 13: syncCredentials[2].to: Duplicate value: "harbor-pull (same copy as syncCredentials[0])"`,
	},
	"invalid-prepull.yaml": {
		`prepull[0].images[0]: Invalid value: "Not A Ref": not an image reference`,
		`prepull[0].images[2]: Duplicate value: "docker.io/library/busybox:latest (same image as images[1])"`,
		`prepull[0].nodeSelector: Invalid value: "bad key!"`,
		`prepull[0].tolerations[0].operator: Unsupported value: "Sometimes"`,
		`prepull[0].tolerations[0].effect: Unsupported value: "Never"`,
		`prepull[0].maxUnavailable: Invalid value: 0`,
		`prepull[1].name: Duplicate value: "gpu"`,
		`prepull[1].images: Required value`,
		`prepull[1].maxUnavailable: Invalid value: "150%"`,
		`prepull[2].name: Invalid value: "Upper_Case"`,
		`prepull[2].priorityClassName: Invalid value: "Not_A_Name"`,
	},
}

func TestCheckTestdata(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, f := range files {
		base := filepath.Base(f)
		t.Run(base, func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			c, err := policy.Check(data)
			if strings.HasPrefix(base, "valid-") {
				if err != nil {
					t.Fatalf("valid policy rejected: %v", err)
				}
				if c == nil {
					t.Fatal("no compiled policy")
				}
				return
			}
			if err == nil {
				t.Fatal("invalid policy accepted")
			}
			var perr *policy.Error
			if !errors.As(err, &perr) {
				t.Fatalf("error is %T, want *policy.Error: %v", err, err)
			}
			want, ok := wantProblems[base]
			if !ok {
				t.Fatalf("add %s to wantProblems; it reported: %v", base, err)
			}
			lines := make([]string, len(perr.Problems))
			for i, p := range perr.Problems {
				lines[i] = p.String()
			}
			all := strings.Join(lines, "\n")
			for _, w := range want {
				if !strings.Contains(all, w) {
					t.Errorf("missing %q in:\n%s", w, all)
				}
			}
			if base == "invalid-misspelt-and-six.yaml" && len(lines) != len(want) {
				t.Errorf("%d problems, want %d:\n%s", len(lines), len(want), all)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := policy.Check([]byte("apiVersion: pullgate.dev/v1alpha1\nkind: Policy\n"))
	if err != nil {
		t.Fatal(err)
	}
	p := c.Policy()
	if p.Mode != policy.ModeEnforce || p.PullPolicy != "IfNotPresent" || !c.ResolveEnabled() ||
		c.ResolveTimeout() != policy.DefaultTimeout || p.Resolve.CacheTTL.Duration != policy.DefaultCacheTTL ||
		*p.Resolve.CacheSize != policy.DefaultCacheSize || p.Resolve.MaxStale.Duration != policy.DefaultMaxStale ||
		c.OnError() != policy.OnErrorKeep {
		t.Errorf("unexpected defaults: %+v", p)
	}
}

func TestDecide(t *testing.T) {
	t.Parallel()
	c, err := policy.Load("testdata/valid-full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		ns       string
		labels   map[string]string
		excluded bool
		mode     policy.Mode
		rule     string
		pull     string
		secrets  string
	}{
		{ns: "kube-system", excluded: true},
		{ns: "infra-logging", excluded: true},
		{ns: "web", mode: policy.ModeAudit, pull: "Never", secrets: "a,b"},
		{ns: "web", labels: map[string]string{policy.ModeLabel: "enforce"}, mode: policy.ModeEnforce, pull: "Never", secrets: "a,b"},
		{ns: "web", labels: map[string]string{"zone": "ml"}, mode: policy.ModeAudit, rule: "gpu", pull: "IfNotPresent", secrets: "a,b"},
		// The first matching rule wins, even when a later one also matches.
		{ns: "dev-1", labels: map[string]string{"zone": "gpu"}, mode: policy.ModeAudit, rule: "gpu", pull: "IfNotPresent", secrets: "a,b"},
		// A rule's mode overrides the namespace label.
		{ns: "dev-1", labels: map[string]string{policy.ModeLabel: "audit"}, mode: policy.ModeEnforce, rule: "dev", pull: "Never", secrets: "dev-pull"},
		{ns: "dev-10", mode: policy.ModeAudit, pull: "Never", secrets: "a,b"},
	}
	for _, tc := range cases {
		d := c.Decide(tc.ns, tc.labels, nil)
		if d.Excluded != tc.excluded {
			t.Errorf("%s %v: excluded %v, want %v", tc.ns, tc.labels, d.Excluded, tc.excluded)
			continue
		}
		if tc.excluded {
			continue
		}
		if d.Mode != tc.mode || d.Rule != tc.rule || string(d.PullPolicy) != tc.pull || strings.Join(d.PullSecrets, ",") != tc.secrets {
			t.Errorf("%s %v: got %+v", tc.ns, tc.labels, d)
		}
	}
}

func TestMirrorMatching(t *testing.T) {
	t.Parallel()
	c, err := policy.Load("testdata/valid-full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, alias := range []string{"docker.io", "index.docker.io", "registry-1.docker.io"} {
		m, ok := c.MirrorFor(alias)
		if !ok || m.Host != "harbor.example.com" || m.Prefix != "dockerhub" || c.AlternateMirrors(alias) != nil {
			t.Errorf("%s: got %+v %v, alternates %+v", alias, m, ok, c.AlternateMirrors(alias))
		}
	}
	if _, ok := c.MirrorFor("quay.io"); ok {
		t.Error("quay.io has no mirror")
	}
	if _, ok := c.OnMirror("harbor.example.com", "dockerhub/library/nginx"); !ok {
		t.Error("repository under the mirror prefix not recognised")
	}
	if _, ok := c.OnMirror("harbor.example.com", "dockerhubx/library/nginx"); ok {
		t.Error("a prefix must match whole path segments")
	}
	if m, _ := c.MirrorFor("docker.io"); m.UpstreamRepository("dockerhub/library/nginx") != "index.docker.io/library/nginx" {
		t.Errorf("upstream of a mirror repository: %s", m.UpstreamRepository("dockerhub/library/nginx"))
	}
	if !c.ExcludedImage("registry.k8s.io/pause:3.10") || c.ExcludedImage("docker.io/library/nginx:1") {
		t.Error("exclude.images globs")
	}
}

// TestExamplesLoad keeps the shipped example policies and every policy in the README valid.
func TestExamplesLoad(t *testing.T) {
	t.Parallel()
	files, _ := filepath.Glob("../../examples/policy-*.yaml")
	if len(files) < 3 {
		t.Fatalf("expected the three example policies, found %v", files)
	}
	for _, f := range files {
		if _, err := policy.Load(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(readme), -1)
	n := 0
	for _, b := range blocks {
		if !strings.Contains(b[1], "kind: Policy") {
			continue
		}
		n++
		if _, err := policy.Check([]byte(b[1])); err != nil {
			t.Errorf("README policy %d: %v\n%s", n, err, b[1])
		}
	}
	if n == 0 {
		t.Error("README.md shows no policy")
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, file := range files {
		data, _ := os.ReadFile(file)
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := policy.Check(data)
		if err == nil && c == nil {
			t.Fatal("nil policy without an error")
		}
	})
}

// TestMirrorOrder: entries with the same registry are its mirrors in the order listed, each with
// its own connection, and an image already on any of them is recognised as on a mirror.
func TestMirrorOrder(t *testing.T) {
	t.Parallel()
	c, err := policy.Load("testdata/valid-failover.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		registry string
		want     []string // host/prefix, in order
		creds    []string
	}{
		{registry: "docker.io", want: []string{"m1.example.com/dockerhub", "m2.example.com/dockerhub"}, creds: []string{"m1-robot", ""}},
		{registry: "registry-1.docker.io", want: []string{"m1.example.com/dockerhub", "m2.example.com/dockerhub"}, creds: []string{"m1-robot", ""}},
		{registry: "quay.io", want: []string{"m1.example.com/quay"}, creds: []string{"m1-robot"}},
		{registry: "ghcr.io"},
	}
	for _, tc := range cases {
		t.Run(tc.registry, func(t *testing.T) {
			t.Parallel()
			var ms []policy.MirrorTarget
			if m, ok := c.MirrorFor(tc.registry); ok {
				ms = append([]policy.MirrorTarget{m}, c.AlternateMirrors(tc.registry)...)
			}
			var got, creds []string
			for _, m := range ms {
				got = append(got, m.Host+"/"+m.Prefix)
				creds = append(creds, m.Source.CredentialsSecret)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") || strings.Join(creds, ",") != strings.Join(tc.creds, ",") {
				t.Errorf("mirrors %v with credentials %v, want %v with %v", got, creds, tc.want, tc.creds)
			}
		})
	}
	if m, ok := c.OnMirror("m2.example.com", "dockerhub/library/nginx"); !ok || m.Registry != "docker.io" {
		t.Errorf("an image on the second mirror: %+v %v", m, ok)
	}
	c.AlternateMirrors("docker.io")[0].Host = "changed"
	if c.AlternateMirrors("docker.io")[0].Host != "m2.example.com" {
		t.Error("AlternateMirrors hands out the compiled policy's own slice")
	}
}

// resolve.digestMismatch compares digests only where the policy lets pullgate ask upstreams: set,
// or unset with fallbackToUpstream (then Mirror); and leaves the generation alone when unset.
func TestDigestMismatch(t *testing.T) {
	t.Parallel()
	base := "apiVersion: pullgate.dev/v1alpha1\nkind: Policy\n"
	plain, err := policy.Check([]byte(base))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		resolve string
		want    policy.DigestMismatch
	}{
		{"", ""},
		{"resolve: {fallbackToUpstream: true}\n", policy.PinMirrorDigest},
		{"resolve: {digestMismatch: Mirror}\n", policy.PinMirrorDigest},
		{"resolve: {digestMismatch: Upstream, fallbackToUpstream: true}\n", policy.PinUpstreamDigest},
	} {
		c, err := policy.Check([]byte(base + tc.resolve))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.DigestMismatch(); got != tc.want {
			t.Errorf("%q: DigestMismatch() = %q, want %q", tc.resolve, got, tc.want)
		}
		if (tc.resolve == "") != (c.Generation() == plain.Generation()) {
			t.Errorf("%q: generation %s, the plain policy's %s", tc.resolve, c.Generation(), plain.Generation())
		}
	}
}
