package main

import (
	"errors"
	"strings"
	"testing"
)

const explainPolicy = offlinePolicy + `exclude:
  namespaces: [kube-system]
  images: ["registry.k8s.io/pause:*"]
allowPodOptOut: true
rules:
  - name: gpu
    namespaceSelector: {matchLabels: {team: gpu}}
    imagePullSecrets: [gpu-pull]
`

// TestExplain: for each kind and each reason, what explain says, in the words of warnings,
// metrics and reports.
func TestExplain(t *testing.T) {
	t.Parallel()
	pol := writeFile(t, "policy.yaml", explainPolicy)
	enforce := []string{"--namespace-labels", "pullgate.dev/mode=enforce"}
	cases := map[string]struct {
		stdin string
		args  []string
		want  []string
	}{
		"image": {args: append([]string{"--image", "nginx:1.27", "-n", "shop"}, enforce...), want: []string{
			"Pod/explain in namespace shop:", "mode Enforce, rule none",
			"spec.containers[0].image nginx:1.27", "rewrite: -> mirror.example.com/hub/library/nginx:1.27 (mirror mirror.example.com/hub for docker.io)",
			"pull-secret: spec.imagePullSecrets gets mirror-pull"}},
		"rule":               {args: []string{"--image", "nginx", "--namespace-labels", "pullgate.dev/mode=enforce,team=gpu"}, want: []string{"mode Enforce, rule gpu", "gets gpu-pull"}},
		"excluded image":     {args: append([]string{"--image", "registry.k8s.io/pause:3.10"}, enforce...), want: []string{"unchanged: image-excluded"}},
		"on the mirror":      {args: append([]string{"--image", "mirror.example.com/hub/library/nginx:1.27"}, enforce...), want: []string{"unchanged: already as the policy wants"}},
		"excluded namespace": {args: append([]string{"--image", "nginx", "-n", "kube-system"}, enforce...), want: []string{"nothing happens: namespace-excluded (the policy's exclude.namespaces"}},
		"own namespace":      {args: append([]string{"--image", "nginx", "-n", "pullgate-system"}, enforce...), want: []string{"nothing happens: own-namespace"}},
		"not opted in":       {args: []string{"--image", "nginx", "--namespace-labels", "team=a"}, want: []string{"not opted in: the namespace has no pullgate.dev/mode=enforce|audit label", "labelled pullgate.dev/mode=enforce, it would get:", "rewrite: ->"}},
		"audit":              {args: []string{"--image", "nginx", "--namespace-labels", "pullgate.dev/mode=audit"}, want: []string{"mode Audit", "audit: nothing is changed", "rewrite: ->"}},
		"skip annotation":    {stdin: "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {pullgate.dev/skip: \"true\"}}\nspec: {containers: [{name: c, image: nginx}]}\n", args: append([]string{"-f", "-"}, enforce...), want: []string{"Pod/p in namespace default:", "nothing happens: opted-out (the pod carries pullgate.dev/skip=true"}},
		"namespace override": {args: append([]string{"--image", "nginx", "--namespace-annotation", "pullgate.dev/mode=Audit", "--namespace-annotation", "pullgate.dev/mirror=a.example,b.example"}, enforce...), want: []string{
			"mode Enforce", `namespace annotation pullgate.dev/mode=Audit ignored: the policy does not let namespaces choose audit (tenantOverrides.audit)`,
			"namespace annotation pullgate.dev/mirror=a.example,b.example ignored"}},
		"unparseable": {args: append([]string{"--image", "Not/A:Valid:Ref"}, enforce...), want: []string{"unpinnable: \"Not/A:Valid:Ref\" is not a valid image reference"}},
	}
	for kind, manifest := range workloads {
		cases[kind] = struct {
			stdin string
			args  []string
			want  []string
		}{manifest, append([]string{"-f", "-"}, enforce...), []string{kind + "/", "rewrite: -> mirror.example.com/hub/library/nginx:1.27", "pull-secret:"}}
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			out, stderr, err := runCmd(t, tc.stdin, append([]string{"explain", "--policy", pol}, tc.args...)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			for _, want := range tc.want {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

func TestExplainBadInput(t *testing.T) {
	t.Parallel()
	pol := writeFile(t, "policy.yaml", explainPolicy)
	for name, tc := range map[string]struct {
		stdin string
		args  []string
		want  string
		usage bool
	}{
		"no source":        {args: []string{"--policy", pol}, want: "give exactly one of -f FILE, --image REF or KIND/NAME", usage: true},
		"two sources":      {args: []string{"--policy", pol, "--image", "a", "-f", "-"}, want: "exactly one", usage: true},
		"cluster object":   {args: []string{"--policy", pol, "deployment/web"}, want: "pass --kubeconfig", usage: true},
		"no policy":        {args: []string{"--image", "nginx"}, want: "--policy is required without --kubeconfig", usage: true},
		"not a workload":   {stdin: "kind: Service\nmetadata: {name: a}\n", args: []string{"--policy", pol, "-f", "-"}, want: "no document is a Pod or a Deployment"},
		"no template":      {stdin: "kind: Job\nmetadata: {name: j}\n", args: []string{"--policy", pol, "-f", "-"}, want: "Job/j has no spec.template"},
		"malformed":        {stdin: "{not: [valid", args: []string{"--policy", pol, "-f", "-"}, want: "neither JSON nor YAML"},
		"missing policy":   {args: []string{"--policy", "/nonexistent.yaml", "--image", "nginx"}, want: "no such file"},
		"missing manifest": {args: []string{"--policy", pol, "-f", "/nonexistent.yaml"}, want: "no such file"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			out, _, err := runCmd(t, tc.stdin, append([]string{"explain"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q; printed %q", err, tc.want, out)
			}
			var u usageError
			if errors.As(err, &u) != tc.usage {
				t.Errorf("usage error (exit 2) %v, want %v: %v", !tc.usage, tc.usage, err)
			}
		})
	}
}
