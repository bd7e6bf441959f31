package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
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
	if len(ops) != 3 || ops[0]["value"] != want || ops[1]["value"] != "IfNotPresent" || r.AuditAnnotations["mode"] != "enforce" {
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
		{name: "10MB", stdin: "kind: Pod\nmetadata: {name: " + big + "}\n", want: "larger than 7 MiB"},
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
