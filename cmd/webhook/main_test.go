package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/pullgate/pullgate/internal/admissionhttp"
)

const offlinePolicy = `apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors: [{registry: docker.io, mirror: mirror.example.com/hub}]
resolve: {enabled: false}
imagePullSecrets: [mirror-pull]
`

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func runCmd(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), err
}

const reviewYAML = `apiVersion: admission.k8s.io/v1
kind: AdmissionReview
request:
  uid: 0b5a2f4e-1111-2222-3333-444455556666
  kind: {group: "", version: v1, kind: Pod}
  resource: {group: "", version: v1, resource: pods}
  namespace: apps
  operation: CREATE
  object:
    apiVersion: v1
    kind: Pod
    metadata: {name: web}
    spec:
      containers: [{name: web, image: "nginx:1.27@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}]
`

func TestMutateAdmissionReview(t *testing.T) {
	t.Parallel()
	pol := writeFile(t, "policy.yaml", offlinePolicy)
	out, _, err := runCmd(t, reviewYAML, "mutate", "--policy", pol)
	if err != nil {
		t.Fatal(err)
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal([]byte(out), &review); err != nil {
		t.Fatalf("output is not an AdmissionReview: %v\n%s", err, out)
	}
	r := review.Response
	if review.Kind != "AdmissionReview" || r == nil || r.UID != "0b5a2f4e-1111-2222-3333-444455556666" || !r.Allowed ||
		r.PatchType == nil || *r.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("response: %+v", review)
	}
	var ops []map[string]any
	if err := json.Unmarshal(r.Patch, &ops); err != nil {
		t.Fatal(err)
	}
	want := "mirror.example.com/hub/library/nginx:1.27@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	// The last op records the original reference (mutate.OriginalAnnotation).
	if len(ops) != 4 || ops[0]["value"] != want || ops[1]["value"] != "IfNotPresent" || ops[3]["path"] != "/metadata/annotations" || r.AuditAnnotations["mode"] != "enforce" {
		t.Errorf("patch %v annotations %v", ops, r.AuditAnnotations)
	}
}

func TestMutateBarePodAuditLabels(t *testing.T) {
	t.Parallel()
	pol := writeFile(t, "policy.yaml", offlinePolicy)
	pod := writeFile(t, "pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec: {containers: [{name: web, image: nginx}]}\n")
	out, stderr, err := runCmd(t, "", "mutate", "--policy", pol, "-f", pod)
	if err != nil || !strings.Contains(out, "image: mirror.example.com/hub/library/nginx\n") || !strings.Contains(out, "name: mirror-pull") {
		t.Fatalf("err=%v stdout:\n%s\nstderr:\n%s", err, out, stderr)
	}
	out, stderr, err = runCmd(t, "", "mutate", "--policy", pol, "-f", pod, "--namespace-labels", "pullgate.dev/mode=audit,team=a")
	if err != nil || !strings.Contains(out, "image: nginx\n") || !strings.Contains(stderr, "warning: would rewrite") {
		t.Fatalf("audit: err=%v stdout:\n%s\nstderr:\n%s", err, out, stderr)
	}
}

func TestMutateBadInput(t *testing.T) {
	t.Parallel()
	pol := writeFile(t, "policy.yaml", offlinePolicy)
	big := strings.Repeat("a", 10<<20)
	cases := []struct {
		name, stdin, want string
		args              []string
	}{
		{name: "malformed", stdin: "{not: [valid", want: "neither JSON nor YAML"},
		{name: "not a pod", stdin: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", want: "input is a ConfigMap"},
		{name: "no kind", stdin: "metadata: {name: x}\n", want: "input has no kind"},
		{name: "empty", stdin: "", want: "stdin is empty"},
		{name: "blank", stdin: "\n  \n", want: "stdin is empty"},
		{name: "10MB", stdin: "kind: Pod\nmetadata: {name: " + big + "}\n", want: "7 MiB or more"},
		// serve's limit: a body of exactly MaxBodySize bytes is refused (413) there, and here.
		{name: "exactly the limit", stdin: exactly(admissionhttp.MaxBodySize), want: "7 MiB or more"},
		// serve's decoder: member names are case-sensitive, as the API server's are.
		{name: "review with Request", stdin: strings.Replace(reviewYAML, "\nrequest:", "\nRequest:", 1), want: "has no request"},
		{name: "review without request", stdin: "apiVersion: admission.k8s.io/v1\nkind: AdmissionReview\n", want: "has no request"},
		{name: "scalar", stdin: "42", want: "not a Kubernetes object"},
		{name: "missing file", args: []string{"-f", "/nonexistent/pod.yaml"}, want: "no such file"},
		{name: "no policy flag", args: []string{"--policy", ""}, want: "--policy is required"},
		{name: "bad labels", args: []string{"--namespace-labels", "novalue"}, want: "is not k=v"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"mutate", "--policy", pol}, tc.args...)
			out, _, err := runCmd(t, tc.stdin, args...)
			if err == nil {
				t.Fatalf("accepted; printed %q", out)
			}
			msg := oneLine(err.Error())
			if !strings.Contains(msg, tc.want) || len(msg) > 300 {
				t.Errorf("message %q, want a short line containing %q", msg, tc.want)
			}
		})
	}
}

func TestPolicyCheck(t *testing.T) {
	t.Parallel()
	out, _, err := runCmd(t, "", "policy", "check", "../../examples/policy-airgapped.yaml")
	if err != nil || !strings.Contains(out, "valid (mode Enforce, 3 mirror(s), 2 rule(s)") {
		t.Fatalf("err=%v out=%s", err, out)
	}
	bad := writeFile(t, "bad.yaml", "apiVersion: pullgate.dev/v1alpha1\nkind: Policy\nmode: Loud\nmirrors: [{registry: docker.io}]\n")
	out, _, err = runCmd(t, "", "policy", "check", bad)
	if err == nil || !strings.Contains(err.Error(), "2 problem(s)") {
		t.Fatalf("err=%v", err)
	}
	for _, want := range []string{"line 3: mode: Unsupported value", "line 4: mirrors[0].mirror: Required value"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	// A misspelt key and six other problems: all seven in one run, in file order.
	out, _, err = runCmd(t, "", "policy", "check", "../../pkg/policy/testdata/invalid-misspelt-and-six.yaml")
	if err == nil || !strings.Contains(err.Error(), "7 problem(s)") || strings.Count(out, "\n") != 7 ||
		!strings.Contains(out, "line 7: mirrors[0].insecrue: unknown field") || !strings.Contains(out, "line 16: rules[0].mode: Unsupported value") {
		t.Errorf("err=%v out:\n%s", err, out)
	}
	if _, _, err := runCmd(t, "", "policy", "lint"); err == nil {
		t.Error("unknown policy subcommand accepted")
	}
	if _, _, err := runCmd(t, "", "frobnicate"); err == nil {
		t.Error("unknown command accepted")
	}
}

// TestMutateOfflineWithCredentialsSecret: offline there is no API server to read a policy's
// credential Secret from; mutate warns and goes on rather than crashing.
func TestMutateOfflineWithCredentialsSecret(t *testing.T) {
	t.Parallel()
	pol := writeFile(t, "policy.yaml", strings.Replace(offlinePolicy, "mirror: mirror.example.com/hub}", "mirror: mirror.example.com/hub, credentialsSecret: robot}", 1))
	out, stderr, err := runCmd(t, reviewYAML, "mutate", "--policy", pol)
	if err != nil || !strings.Contains(stderr, "no API server to read the secret from") || !strings.Contains(out, `"allowed": true`) {
		t.Fatalf("err=%v stderr=%s out=%s", err, stderr, out)
	}
}

// exactly is a Pod of n bytes of YAML.
func exactly(n int) string {
	head, tail := "kind: Pod\nmetadata: {name: x", "}\n"
	return head + strings.Repeat("x", n-len(head)-len(tail)) + tail
}

// TestMutateJustUnderTheLimit: one byte less than serve's limit is read.
func TestMutateJustUnderTheLimit(t *testing.T) {
	t.Parallel()
	pol := writeFile(t, "policy.yaml", offlinePolicy)
	if _, _, err := runCmd(t, exactly(admissionhttp.MaxBodySize-1), "mutate", "--policy", pol); err != nil {
		t.Fatalf("refused: %v", err)
	}
}

// TestSubcommandHelp: --help and -h print the subcommand's usage, every flag with its default,
// on stdout and succeed; a wrong flag prints the usage on stderr and is a usage error (exit 2).
func TestSubcommandHelp(t *testing.T) {
	t.Parallel()
	commands := []struct {
		args  []string
		flags []string // each flag's name and default, as the usage shows them
	}{
		{[]string{"serve"}, []string{"-policy", "-cert-dir", "-bind-address", "-port int", "(default 9443)", "-metrics-bind-address", `(default ":8080")`, "-health-probe-bind-address", `(default ":8081")`, "-pprof-bind-address", `(default "0")`, "-kubeconfig", "-namespace", "-v int"}},
		{[]string{"mutate"}, []string{"-policy", "-f string", `(default "-")`, "-namespace", "-namespace-labels", "-v int"}},
		{[]string{"policy", "check"}, nil},
		{[]string{"controller"}, []string{"-policy", "-namespace", "-sleeper-image", "-leader-elect", "(default true)", "-owner-deployment", "-metrics-bind-address", "-health-probe-bind-address", "-warm-retry-backoff duration", "(default 30s)"}},
		{[]string{"prepull", "render"}, []string{"-policy", "-namespace", "-name-prefix", `(default "pullgate-prepull-")`, "-sleeper-image"}},
		{[]string{"prepull", "status"}, []string{"-kubeconfig", "-namespace"}},
		{[]string{"version"}, nil},
	}
	for _, c := range commands {
		name := strings.Join(c.args, " ")
		for _, help := range []string{"--help", "-h"} {
			t.Run(name+" "+help, func(t *testing.T) {
				t.Parallel()
				out, stderr, err := runCmd(t, "", append(c.args, help)...)
				if err != nil || stderr != "" {
					t.Fatalf("err=%v stderr=%q", err, stderr)
				}
				if !strings.HasPrefix(out, "usage: webhook "+name) {
					t.Errorf("usage does not start with the command:\n%s", out)
				}
				for _, f := range c.flags {
					if !strings.Contains(out, f) {
						t.Errorf("usage lacks %q:\n%s", f, out)
					}
				}
			})
		}
		t.Run(name+" wrong flag", func(t *testing.T) {
			t.Parallel()
			out, stderr, err := runCmd(t, "", append(c.args, "--no-such-flag")...)
			var u usageError
			if !errors.As(err, &u) || out != "" {
				t.Fatalf("err=%v (want a usage error) stdout=%q", err, out)
			}
			if !strings.Contains(stderr, "flag provided but not defined: -no-such-flag") || !strings.Contains(stderr, "usage: webhook "+name) {
				t.Errorf("stderr:\n%s", stderr)
			}
		})
	}
}

// TestControllerRefusesHotRetries: a warm backoff under a second would retry a failing mirror
// in a loop; it is a usage error, as is a value that is no duration.
func TestControllerRefusesHotRetries(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"0s", "-5s", "500ms", "soon"} {
		t.Run(v, func(t *testing.T) {
			t.Parallel()
			_, stderr, err := runCmd(t, "", "controller", "--policy", "p.yaml", "--warm-retry-backoff", v)
			var u usageError
			if !errors.As(err, &u) || !strings.Contains(stderr, "warm-retry-backoff") {
				t.Fatalf("err=%v stderr=%q, want a usage error naming the flag", err, stderr)
			}
		})
	}
}
