package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/pullgate/pullgate/pkg/contract"
)

func testNode(name, arch string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelOSStable: "linux", corev1.LabelArchStable: arch, "zone": "a"}},
		Status:     corev1.NodeStatus{Images: []corev1.ContainerImage{{Names: []string{"big"}}}},
	}
}

// The nodes' platforms come from an informer that keeps only their os and arch labels, and
// follow a node joining.
func TestNodePlatforms(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(testNode("a", "amd64"), testNode("b", "amd64"))
	n := newNodePlatforms(t.Context(), client)
	wait := func(want ...contract.Platform) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got := n.Platforms()
			slices.SortFunc(got, func(a, b contract.Platform) int { return strings.Compare(a.String(), b.String()) })
			if slices.Equal(got, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("platforms %v, want %v", got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	amd64, arm64 := contract.Platform{OS: "linux", Architecture: "amd64"}, contract.Platform{OS: "linux", Architecture: "arm64"}
	wait(amd64)
	if _, err := client.CoreV1().Nodes().Create(t.Context(), testNode("c", "arm64"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait(amd64, arm64)
	kept, err := nodeTransform(testNode("d", "arm64"))
	if err != nil {
		t.Fatal(err)
	}
	if node := kept.(*corev1.Node); len(node.Labels) != 2 || len(node.Status.Images) != 0 {
		t.Errorf("the transform kept %+v", node)
	}
}
