package main

import (
	"maps"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
)

// Namespaces are read with their labels and pullgate's annotations only, from the cache once it
// has synced and from the API server before.
func TestNamespaces(t *testing.T) {
	t.Parallel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   "shop",
		Labels: map[string]string{"pullgate.dev/mode": "enforce"},
		Annotations: map[string]string{
			"pullgate.dev/mode": "Audit", "pullgate.dev/mirror": "m.example",
			"kubectl.kubernetes.io/last-applied-configuration": "{...}",
		},
	}}
	n, err := newNamespaces(t.Context(), fake.NewClientset(ns))
	if err != nil {
		t.Fatal(err)
	}
	wantAnn := map[string]string{"pullgate.dev/mode": "Audit", "pullgate.dev/mirror": "m.example"}
	check := func(when string) {
		t.Helper()
		got, err := n.Namespace(t.Context(), "shop")
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(got.Labels, ns.Labels) || !maps.Equal(got.Annotations, wantAnn) {
			t.Errorf("%s: got %+v", when, got)
		}
	}
	check("before sync") // whether or not the cache has it yet
	if !cache.WaitForCacheSync(t.Context().Done(), n.synced) {
		t.Fatal("cache never synced")
	}
	check("from the cache")
	if _, err := n.Namespace(t.Context(), "absent"); err == nil {
		t.Error("an absent namespace read without error")
	}
}
