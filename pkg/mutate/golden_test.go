package mutate

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	"sigs.k8s.io/yaml"

	"github.com/pullgate/pullgate/internal/kjson"
	"github.com/pullgate/pullgate/internal/kjson/kjsontest"
	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/policy"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// digestOf is the digest the test registry "holds" for a reference: stable, distinct per ref.
func digestOf(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// outcomesFor answers every request of a plan, failing the references listed in fail.
func outcomesFor(p *Plan, fail map[string]bool) map[string]contract.Outcome {
	out := map[string]contract.Outcome{}
	for _, r := range p.Requests() {
		key := r.Ref.String()
		if fail[path.Base(r.Upstream.RepositoryStr())] {
			out[key] = contract.Outcome{Err: errors.New("registry said 503")}
			continue
		}
		out[key] = contract.Outcome{Resolution: contract.Resolution{Digest: digestOf(key)}}
	}
	return out
}

func mustLoad(t testing.TB, path string) *policy.Compiled {
	t.Helper()
	c, err := policy.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func podJSON(t testing.TB, y string) []byte {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// golden is what a case's file records.
type golden struct {
	Patch            json.RawMessage   `json:"patch"`
	Warnings         []string          `json:"warnings,omitempty"`
	AuditAnnotations map[string]string `json:"auditAnnotations,omitempty"`
	Deny             string            `json:"deny,omitempty"`
	Requests         []string          `json:"requests,omitempty"`
}

const basePod = `
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
  - name: app
    image: %s
    imagePullPolicy: Always
`

func pod(image string) string { return strings.Replace(basePod, "%s", image, 1) }

type goldenCase struct {
	name      string
	namespace string
	labels    map[string]string
	op        admissionv1.Operation
	sub       string
	object    string
	old       string
	fail      map[string]bool
	policy    string
}

func goldenCases() []goldenCase {
	const d = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	return []goldenCase{
		{name: "dockerhub-short", object: pod("nginx:1.27")},
		{name: "dockerhub-no-tag", object: pod("nginx")},
		{name: "dockerhub-library", object: pod("library/nginx:1.27")},
		{name: "dockerhub-user-repo", object: pod("bitnami/redis:7")},
		{name: "dockerhub-index-alias", object: pod("index.docker.io/library/nginx:1.27")},
		{name: "dockerhub-registry-1-alias", object: pod("registry-1.docker.io/library/nginx:1.27")},
		{name: "host-port", object: pod("registry.example.com:5000/team/app:2.0")},
		{name: "localhost-port", object: pod("localhost:5000/app:dev")},
		{name: "ipv6-port", object: pod(`"[::1]:5000/app:dev"`)},
		{name: "tag-and-digest", object: pod("nginx:1.27@" + d)},
		{name: "digest-only", object: pod("nginx@" + d)},
		{name: "no-mirror-pinned-in-place", object: pod("quay.io/prometheus/node-exporter:v1.8.0")},
		{name: "uppercase-invalid", object: pod("NGINX:1.27")},
		{name: "garbage-invalid", object: pod("'nginx::'")},
		{name: "excluded-image", object: pod("registry.k8s.io/pause:3.10")},
		{name: "already-on-mirror", object: pod("mirror.example.com/dockerhub/library/nginx:1.27")},
		{name: "resolve-failure-keep", object: pod("nginx:1.27"), fail: map[string]bool{"nginx": true}},
		{name: "resolve-failure-deny", object: pod("nginx:1.27"), fail: map[string]bool{"nginx": true}, policy: "testdata/policy-deny.yaml"},
		{name: "all-image-fields", object: `
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  imagePullSecrets: [{name: existing}, {name: mirror-pull}]
  initContainers:
  - {name: init, image: busybox:1.36}
  containers:
  - {name: app, image: nvcr.io/nvidia/pytorch:24.05-py3, imagePullPolicy: IfNotPresent}
  - {name: side, image: "nginx:1.27", unknownField: kept}
  ephemeralContainers:
  - {name: debug, image: busybox:1.36, imagePullPolicy: Always}
  volumes:
  - {name: cfg, configMap: {name: c}}
  - {name: data, image: {reference: "nvcr.io/nvidia/dataset:v1"}}
  futureSpecField: {a: 1}
`},
		{name: "excluded-namespace", namespace: "kube-system", object: pod("nginx:1.27")},
		{name: "excluded-namespace-glob", namespace: "infra-monitoring", object: pod("nginx:1.27")},
		{name: "own-namespace", namespace: "pullgate-system", object: pod("nginx:1.27")},
		{name: "mirror-pod", object: `
apiVersion: v1
kind: Pod
metadata: {name: p, annotations: {kubernetes.io/config.mirror: abc}}
spec: {containers: [{name: app, image: "nginx:1.27"}]}
`},
		{name: "opt-out", object: `
apiVersion: v1
kind: Pod
metadata: {name: p, annotations: {pullgate.dev/skip: "true"}}
spec: {containers: [{name: app, image: "nginx:1.27"}]}
`},
		{name: "opt-out-not-allowed", policy: "testdata/policy-deny.yaml", object: `
apiVersion: v1
kind: Pod
metadata: {name: p, annotations: {pullgate.dev/skip: "true"}}
spec: {containers: [{name: app, image: "nginx@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}]}
`},
		{name: "rule-selector-first-wins", namespace: "team-gpu", labels: map[string]string{"zone": "gpu"}, object: pod("nginx:1.27")},
		{name: "rule-namespace-glob-audit", namespace: "team-web", object: pod("nginx:1.27")},
		{name: "audit-label", labels: map[string]string{policy.ModeLabel: "audit"}, object: pod("nginx:1.27")},
		{name: "update-changed-image", op: admissionv1.Update, object: pod("nginx:1.28"), old: pod("mirror.example.com/dockerhub/library/nginx:1.27@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")},
		{name: "update-unchanged-image", op: admissionv1.Update, object: pod("nginx:1.27"), old: pod("nginx:1.27")},
		{name: "ephemeral-subresource", op: admissionv1.Update, sub: "ephemeralcontainers", object: `
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers: [{name: app, image: "nginx:1.27"}]
  ephemeralContainers:
  - {name: old, image: busybox:1.35}
  - {name: new, image: busybox:1.36, imagePullPolicy: Always}
`, old: `
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers: [{name: app, image: "nginx:1.27"}]
  ephemeralContainers:
  - {name: old, image: busybox:1.35}
`},
	}
}

func TestGolden(t *testing.T) {
	t.Parallel()
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			policyPath := tc.policy
			if policyPath == "" {
				policyPath = "testdata/policy.yaml"
			}
			pol := mustLoad(t, policyPath)
			in := tc.input(t)
			plan, err := NewPlan(pol, in)
			if err != nil {
				t.Fatalf("NewPlan: %v", err)
			}
			// The handler plans with a memo of decisions: filling it and then reading from it
			// must plan exactly the same.
			memo := (&decisionMemo{}).For(pol)
			for _, round := range []string{"filling the memo", "from the memo"} {
				if memoized, err := newPlan(pol, in, memo); err != nil || !reflect.DeepEqual(memoized, plan) {
					t.Fatalf("%s: planned %+v (%v), want %+v", round, memoized, err, plan)
				}
			}
			res := plan.Apply(outcomesFor(plan, tc.fail))
			got := golden{Warnings: res.Warnings, AuditAnnotations: res.AuditAnnotations, Deny: res.Deny, Patch: json.RawMessage("[]")}
			if len(res.Patch) > 0 {
				got.Patch, _ = json.Marshal(res.Patch)
				// The policy's generation changes with every new policy field or default; the
				// files record where it goes, not its value.
				got.Patch = bytes.ReplaceAll(got.Patch, []byte(pol.Generation()), []byte("GENERATION"))
			}
			for _, r := range plan.Requests() {
				got.Requests = append(got.Requests, r.Ref.String())
			}
			if plan.Skip != "" {
				got.Deny = "" // a skip has no deny; record the reason as a warning-free marker
				got.Requests = append(got.Requests, "skip:"+plan.Skip)
			}
			compareGolden(t, filepath.Join("testdata", "golden", tc.name+".json"), got)

			// Every patch must apply to the raw input, and mutating the result again (as the
			// API server's reinvocation does) must change nothing.
			if len(res.Patch) == 0 {
				return
			}
			// What the handler sends: EncodePatch's bytes, the same as json.Marshal's.
			raw, err := kjson.EncodePatch(res.Patch)
			if want, _ := json.Marshal(res.Patch); err != nil || !kjsontest.SameAsMarshal(raw, want) {
				t.Fatalf("EncodePatch: %v\n%s\nwant %s", err, raw, want)
			}
			patch, err := jsonpatch.DecodePatch(raw)
			if err != nil {
				t.Fatalf("patch does not decode: %v", err)
			}
			out, err := patch.Apply(in.Object)
			if err != nil {
				t.Fatalf("patch does not apply: %v", err)
			}
			if strings.Contains(string(in.Object), "unknownField") && !strings.Contains(string(out), `"unknownField":"kept"`) {
				t.Errorf("unknown fields lost: %s", out)
			}
			again := in
			again.Object = out
			if in.Operation == admissionv1.Update {
				// The API server reinvokes with the same old object.
				again.OldObject = in.OldObject
			}
			plan2, err := NewPlan(pol, again)
			if err != nil {
				t.Fatalf("second NewPlan: %v", err)
			}
			if reqs := plan2.Requests(); len(tc.fail) == 0 && len(reqs) != 0 {
				t.Errorf("second pass resolves again: %v", reqs)
			}
			if res2 := plan2.Apply(outcomesFor(plan2, tc.fail)); len(res2.Patch) != 0 {
				t.Errorf("not idempotent: second patch %v", res2.Patch)
			}
		})
	}
}

func (tc goldenCase) input(t testing.TB) Input {
	in := Input{
		Operation:       tc.op,
		SubResource:     tc.sub,
		Namespace:       tc.namespace,
		NamespaceLabels: tc.labels,
		OwnNamespace:    "pullgate-system",
		Object:          podJSON(t, tc.object),
	}
	if in.Operation == "" {
		in.Operation = admissionv1.Create
	}
	if in.Namespace == "" {
		in.Namespace = "default"
	}
	if tc.old != "" {
		in.OldObject = podJSON(t, tc.old)
	}
	return in
}

func compareGolden(t *testing.T, path string, got golden) {
	t.Helper()
	data, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, '\n')
	if *update {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run `make update-golden` to create it)", err)
	}
	if string(want) != string(data) {
		t.Errorf("%s differs (run `make update-golden` and review the diff):\n--- want\n%s\n--- got\n%s", path, want, data)
	}
}
