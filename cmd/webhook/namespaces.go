package main

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/pullgate/pullgate/pkg/mutate"
)

// namespaceLabels serves namespace labels from an informer's cache, asking the API server
// directly only for a namespace the cache has not seen yet (created a moment ago).
type namespaceLabels struct {
	client kubernetes.Interface
	lister corelisters.NamespaceLister
	synced cache.InformerSynced
}

var _ mutate.NamespaceLabeler = (*namespaceLabels)(nil)

func newNamespaceLabels(ctx context.Context, client kubernetes.Interface) *namespaceLabels {
	factory := informers.NewSharedInformerFactory(client, 0)
	inf := factory.Core().V1().Namespaces()
	n := &namespaceLabels{client: client, lister: inf.Lister(), synced: inf.Informer().HasSynced}
	factory.Start(ctx.Done())
	return n
}

func (n *namespaceLabels) Labels(ctx context.Context, namespace string) (map[string]string, error) {
	if n.synced() {
		if ns, err := n.lister.Get(namespace); err == nil {
			return ns.Labels, nil
		}
	}
	ns, err := n.client.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading namespace %s: %w", namespace, err)
	}
	return ns.Labels, nil
}
