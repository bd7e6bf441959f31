package main

import (
	"context"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/mutate"
)

// nodePlatforms serves the platforms of the cluster's nodes from a Node informer, started on
// first use: only a policy with platforms.fromNodes asks, and only then does the webhook need
// list/watch on nodes.
type nodePlatforms struct {
	ctx    context.Context
	client kubernetes.Interface

	start sync.Once
	mu    sync.Mutex
	set   []contract.Platform
	dirty bool // a node changed since set was computed
	inf   cache.SharedIndexInformer
}

var _ mutate.NodePlatforms = (*nodePlatforms)(nil)

func newNodePlatforms(ctx context.Context, client kubernetes.Interface) *nodePlatforms {
	return &nodePlatforms{ctx: ctx, client: client}
}

// Platforms returns the distinct platforms of the nodes; nil until the informer has synced,
// which says nothing rather than something wrong.
func (n *nodePlatforms) Platforms() []contract.Platform {
	n.start.Do(n.run)
	if !n.inf.HasSynced() {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dirty {
		n.dirty = false
		n.set = platformsOf(n.inf.GetStore().List())
	}
	return n.set
}

func (n *nodePlatforms) run() {
	factory := informers.NewSharedInformerFactoryWithOptions(n.client, 0, informers.WithTransform(nodeTransform))
	n.inf = factory.Core().V1().Nodes().Informer()
	recompute := func(any) { n.mu.Lock(); n.dirty = true; n.mu.Unlock() }
	_, _ = n.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    recompute,
		UpdateFunc: func(_, obj any) { recompute(obj) },
		DeleteFunc: recompute,
	})
	factory.Start(n.ctx.Done())
}

// platformsOf returns the distinct platforms of the nodes, in no particular order.
func platformsOf(objs []any) []contract.Platform {
	var set []contract.Platform
	for _, obj := range objs {
		node, ok := obj.(*corev1.Node)
		if !ok {
			continue
		}
		p := contract.Platform{OS: node.Labels[corev1.LabelOSStable], Architecture: node.Labels[corev1.LabelArchStable]}
		if p.OS != "" && p.Architecture != "" && !slices.Contains(set, p) {
			set = append(set, p)
		}
	}
	return set
}

// nodeTransform keeps a node's name and its os and arch labels: a Node object carries images,
// conditions and addresses, kilobytes each that a large cluster would hold for nothing.
func nodeTransform(obj any) (any, error) {
	node, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:            node.Name,
		ResourceVersion: node.ResourceVersion,
		Labels: map[string]string{
			corev1.LabelOSStable:   node.Labels[corev1.LabelOSStable],
			corev1.LabelArchStable: node.Labels[corev1.LabelArchStable],
		},
	}}, nil
}
