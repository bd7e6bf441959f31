package main

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/pullgate/pullgate/pkg/mutate"
)

// namespaces serves namespace labels and annotations from an informer's cache, asking the API
// server directly only for a namespace the cache has not seen yet (created a moment ago). The
// namespace get/list/watch the webhook's RBAC already grants covers both.
type namespaces struct {
	client kubernetes.Interface
	lister corelisters.NamespaceLister
	synced cache.InformerSynced
}

var _ mutate.NamespaceReader = (*namespaces)(nil)

func newNamespaces(ctx context.Context, client kubernetes.Interface) (*namespaces, error) {
	factory := informers.NewSharedInformerFactory(client, 0)
	inf := factory.Core().V1().Namespaces()
	if err := inf.Informer().SetTransform(slimNamespace); err != nil {
		return nil, fmt.Errorf("namespace informer: %w", err)
	}
	n := &namespaces{client: client, lister: inf.Lister(), synced: inf.Informer().HasSynced}
	factory.Start(ctx.Done())
	return n, nil
}

func (n *namespaces) Namespace(ctx context.Context, name string) (mutate.NamespaceMeta, error) {
	if n.synced() {
		if ns, err := n.lister.Get(name); err == nil {
			return mutate.NamespaceMeta{Labels: ns.Labels, Annotations: ns.Annotations}, nil
		}
	}
	ns, err := n.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return mutate.NamespaceMeta{}, fmt.Errorf("reading namespace %s: %w", name, err)
	}
	return mutate.NamespaceMeta{Labels: ns.Labels, Annotations: pullgateAnnotations(ns.Annotations)}, nil
}

// slimNamespace keeps of a namespace its name, labels and pullgate's annotations: the cache
// need not hold every namespace's other annotations (kubectl's last-applied configuration can be
// large), which the policy never reads.
func slimNamespace(obj any) (any, error) {
	ns, ok := obj.(*corev1.Namespace)
	if !ok {
		return obj, nil // a tombstone: left as it is
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:            ns.Name,
		UID:             ns.UID,
		ResourceVersion: ns.ResourceVersion,
		Labels:          ns.Labels,
		Annotations:     pullgateAnnotations(ns.Annotations),
	}}, nil
}

func pullgateAnnotations(in map[string]string) map[string]string {
	var out map[string]string
	for k, v := range in {
		if strings.HasPrefix(k, "pullgate.dev/") {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}
