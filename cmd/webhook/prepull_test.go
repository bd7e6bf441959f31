package main

import (
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// TestPrepullRender: render pins every image through a real (in-memory) mirror exactly as mutate
// pins a pod's image, and prints one DaemonSet per group; a tag the mirror does not have is an
// error naming it, and nothing is printed.
func TestPrepullRender(t *testing.T) {
	t.Parallel()
	mirror := memRegistry(t)
	digest := pushRandom(t, mirror, "hub/library/busybox:1.36")
	base := fmt.Sprintf(`apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors: [{registry: docker.io, mirror: %s/hub, insecure: true}]
imagePullSecrets: [mirror-pull]
prepull:
  - name: gpu
    images: [busybox:1.36]
    nodeSelector: {nvidia.com/gpu.present: "true"}
    tolerations: [{operator: Exists}]
`, mirror)
	pol := writeFile(t, "policy.yaml", base)
	out, stderr, err := runCmd(t, "", "prepull", "render", "--policy", pol, "--namespace", "pg", "--sleeper-image", "reg.example/pullgate:v1")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	// The webhook's answer for the same image in a pod.
	pod := writeFile(t, "pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: busybox:1.36}]}\n")
	mutated, _, err := runCmd(t, "", "mutate", "--policy", pol, "-f", pod)
	if err != nil {
		t.Fatal(err)
	}
	want := mirror + "/hub/library/busybox:1.36@" + digest
	if !strings.Contains(mutated, "image: "+want+"\n") {
		t.Fatalf("mutate pinned differently than expected:\n%s", mutated)
	}
	docs := strings.Split(strings.TrimPrefix(out, "---\n"), "---\n")
	if len(docs) != 1 {
		t.Fatalf("%d documents, want 1:\n%s", len(docs), out)
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict([]byte(docs[0]), &ds); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	c := ds.Spec.Template.Spec.Containers
	if ds.Name != "pullgate-prepull-gpu" || ds.Namespace != "pg" || len(c) != 1 || c[0].Image != want {
		t.Errorf("DaemonSet %s/%s containers %+v, want one pulling %s", ds.Namespace, ds.Name, c, want)
	}
	if strings.Contains(out, "creationTimestamp") || strings.Contains(out, "status:") {
		t.Errorf("output carries fields the API server owns:\n%s", out)
	}

	missing := writeFile(t, "policy.yaml", strings.Replace(base, "images: [busybox:1.36]", "images: [busybox:1.36, nginx:9.9]", 1))
	out, _, err = runCmd(t, "", "prepull", "render", "--policy", missing)
	if err == nil || !strings.Contains(err.Error(), `group gpu: cannot pin "nginx:9.9"`) || out != "" {
		t.Errorf("err = %v, out = %q; want an error naming nginx:9.9 and no output", err, out)
	}
}
