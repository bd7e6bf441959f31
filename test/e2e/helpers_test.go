//go:build e2e

package e2e_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// create creates pod in ns and returns what the API server stored (re-read, not the create
// response), so that the assertions see exactly what a kubelet would.
func create(t *testing.T, ns string, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	if _, err := env.Client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, pod.Name, err)
	}
	return get(t, ns, pod.Name)
}

func get(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	stored, err := env.Client.CoreV1().Pods(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get pod %s/%s: %v", ns, name, err)
	}
	return stored
}

// deleteLater deletes a pod when t ends; for pods in namespaces other tests use (kube-system).
func deleteLater(t *testing.T, ns, name string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		zero := int64(0)
		_ = env.Client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})
}

// pinned is the reference pullgate should produce for repoTag ("e2e/app:v1") pushed with digest d.
func pinned(repoTag string, d v1.Hash) string {
	return env.MirrorRef(repoTag) + "@" + d.String()
}

func checkContainer(t *testing.T, what string, c corev1.Container, image string, pullPolicy corev1.PullPolicy) {
	t.Helper()
	if c.Image != image {
		t.Errorf("%s %q: image = %q, want %q", what, c.Name, c.Image, image)
	}
	if pullPolicy != "" && c.ImagePullPolicy != pullPolicy {
		t.Errorf("%s %q: imagePullPolicy = %q, want %q", what, c.Name, c.ImagePullPolicy, pullPolicy)
	}
}

func secretNames(p *corev1.Pod) []string {
	var out []string
	for _, s := range p.Spec.ImagePullSecrets {
		out = append(out, s.Name)
	}
	return out
}

func checkSecrets(t *testing.T, p *corev1.Pod, want ...string) {
	t.Helper()
	if got := secretNames(p); !slices.Equal(got, want) {
		t.Errorf("imagePullSecrets = %q, want %q", got, want)
	}
}

// mentions reports whether some warning contains every one of the substrings.
func mentions(warnings []string, substrings ...string) bool {
	for _, w := range warnings {
		all := true
		for _, s := range substrings {
			all = all && strings.Contains(w, s)
		}
		if all {
			return true
		}
	}
	return false
}

func isPinned(image string) bool { return strings.Contains(image, "@sha256:") }
