package main

import (
	"errors"
	"strings"
	"testing"
)

// workloads are one manifest per kind mutate and explain accept, each with one container of
// nginx:1.27 in its pod template.
var workloads = map[string]string{
	"Deployment":  "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx:1.27}]}\n",
	"StatefulSet": "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  serviceName: db\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec: {containers: [{name: db, image: nginx:1.27}]}\n",
	"DaemonSet":   "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n    spec: {containers: [{name: agent, image: nginx:1.27}]}\n",
	"ReplicaSet":  "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: web-5d9f}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: nginx:1.27}]}\n",
	"Job":         "apiVersion: batch/v1\nkind: Job\nmetadata: {name: once}\nspec:\n  backoffLimit: 1\n  template:\n    spec: {restartPolicy: Never, containers: [{name: once, image: nginx:1.27}]}\n",
	"CronJob":     "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly}\nspec:\n  schedule: \"0 3 * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec: {restartPolicy: Never, containers: [{name: nightly, image: nginx:1.27}]}\n",
}

// TestMutateWorkloads: each kind's pod template gets what its pods would, the rest of the
// manifest stays as written (numbers too), and several documents come back in order.
func TestMutateWorkloads(t *testing.T) {
	t.Parallel()
	pol := writeFile(t, "policy.yaml", offlinePolicy)
	for kind, manifest := range workloads {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			out, stderr, err := runCmd(t, manifest, "mutate", "--policy", pol)
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr)
			}
			for _, want := range []string{"kind: " + kind + "\n", "image: mirror.example.com/hub/library/nginx:1.27\n", "imagePullSecrets:\n", "- name: mirror-pull\n"} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
			if strings.Contains(out, "pullgate.dev/original") || strings.Contains(out, "ownerReferences") {
				t.Errorf("the template got the pod's annotation or owner:\n%s", out)
			}
		})
	}
	t.Run("several documents", func(t *testing.T) {
		t.Parallel()
		in := workloads["Deployment"] + "---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n---\n" + workloads["CronJob"]
		out, stderr, err := runCmd(t, in, "mutate", "--policy", pol, "--namespace-labels", "pullgate.dev/mode=audit")
		if err != nil {
			t.Fatal(err)
		}
		docs := strings.Split(out, "---\n")
		if len(docs) != 3 || !strings.Contains(docs[0], "replicas: 2\n") || !strings.Contains(docs[1], "port: 80\n") || !strings.Contains(docs[2], "schedule: 0 3 * * *\n") {
			t.Errorf("documents:\n%s", out)
		}
		// Audit: unchanged, with the warnings the API server would return.
		if strings.Contains(out, "mirror.example.com") || !strings.Contains(stderr, "warning: Deployment/web: would rewrite") || !strings.Contains(stderr, "Service/web: not a pod or workload") {
			t.Errorf("audit: stdout:\n%s\nstderr:\n%s", out, stderr)
		}
	})
}

func TestMutateWorkloadBadInput(t *testing.T) {
	t.Parallel()
	pol := writeFile(t, "policy.yaml", offlinePolicy)
	for name, tc := range map[string]struct{ stdin, want string }{
		"no template":  {"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 1}\n", "Deployment/web has no spec.template"},
		"cronjob":      {"apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly}\nspec: {schedule: x}\n", "CronJob/nightly has no spec.jobTemplate.spec.template"},
		"no pod":       {"kind: Service\nmetadata: {name: a}\n---\nkind: ConfigMap\nmetadata: {name: b}\n", "no document is an AdmissionReview, a Pod, or a Deployment"},
		"bad document": {workloads["Job"] + "---\n{not: [valid\n", "document 2 is neither JSON nor YAML"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			out, _, err := runCmd(t, tc.stdin, "mutate", "--policy", pol)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q; printed %q", err, tc.want, out)
			}
			var u usageError
			if errors.As(err, &u) {
				t.Errorf("bad input is not a usage error (exit 1, not 2): %v", err)
			}
		})
	}
}
