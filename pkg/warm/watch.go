package warm

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/pullgate/pullgate/pkg/contract"
)

// enabledPoll is how often a controller whose policy does not warm looks again: warming needs
// cluster-wide pod and node reads, which the chart grants only when the policy asks for it, so
// the informers start only then.
const enabledPoll = 10 * time.Second

// Watcher feeds a Queue from the cluster: pods (every namespace) and nodes, through informers
// that keep only what warming reads. Run it on the leader only.
type Watcher struct {
	Client kubernetes.Interface
	Queue  *Queue
}

// Run waits until the policy warms some mirror, then watches pods and nodes and runs the queue
// until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	log := logr.FromContextOrDiscard(ctx).WithName("warm")
	t := time.NewTicker(enabledPoll)
	defer t.Stop()
	for {
		if pol := w.Queue.Policy.Current(); pol != nil && pol.WarmEnabled() {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
	factory := informers.NewSharedInformerFactoryWithOptions(w.Client, 0, informers.WithTransform(Transform))
	pods := factory.Core().V1().Pods().Informer()
	nodes := factory.Core().V1().Nodes()
	if _, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    w.pod,
		UpdateFunc: func(_, obj any) { w.pod(obj) },
	}); err != nil {
		return fmt.Errorf("pod informer: %w", err)
	}
	lister := nodes.Lister()
	nodeInformer := nodes.Informer()
	w.Queue.Platforms = func() []contract.Platform {
		list, err := lister.List(everything)
		if err != nil {
			return nil
		}
		return Platforms(list)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), pods.HasSynced, nodeInformer.HasSynced) {
		return nil // ctx ended
	}
	log.Info("Warming mirrors: watching pods and nodes")
	return w.Queue.Run(ctx)
}

// pod queues the mirror-pinned digests of a pod that waits for them, and marks those of a pod
// that runs (its node pulled them) as warm.
func (w *Watcher) pod(obj any) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	switch p.Status.Phase {
	case corev1.PodRunning, corev1.PodSucceeded:
		for _, img := range Images(p) {
			w.Queue.MarkWarm(img)
		}
	case corev1.PodPending, "":
		pod := Pod{Namespace: p.Namespace, Name: p.Name, UID: p.UID, Bound: p.Spec.NodeName != ""}
		for _, img := range Images(p) {
			w.Queue.Add(img, pod)
		}
	}
}

// Images lists the images of a pod's containers, init and ephemeral containers and image
// volumes, each once.
func Images(p *corev1.Pod) []string {
	var out []string
	add := func(s string) {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, c := range p.Spec.InitContainers {
		add(c.Image)
	}
	for _, c := range p.Spec.Containers {
		add(c.Image)
	}
	for _, c := range p.Spec.EphemeralContainers {
		add(c.Image)
	}
	for _, v := range p.Spec.Volumes {
		if v.Image != nil {
			add(v.Image.Reference)
		}
	}
	return out
}

// Platforms are the distinct OS/architecture pairs of nodes.
func Platforms(nodes []*corev1.Node) []contract.Platform {
	var out []contract.Platform
	for _, n := range nodes {
		p := contract.Platform{OS: n.Status.NodeInfo.OperatingSystem, Architecture: n.Status.NodeInfo.Architecture}
		if p.OS != "" && p.Architecture != "" && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// Transform keeps of a pod its identity, images, node and phase, and of a node its platform:
// a cluster's pods cost the controller a few hundred bytes each, not their whole specs.
func Transform(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: o.Namespace, UID: o.UID, ResourceVersion: o.ResourceVersion},
			Spec:       corev1.PodSpec{NodeName: o.Spec.NodeName},
			Status:     corev1.PodStatus{Phase: o.Status.Phase},
		}
		for _, c := range o.Spec.InitContainers {
			p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: c.Name, Image: c.Image})
		}
		for _, c := range o.Spec.Containers {
			p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: c.Name, Image: c.Image})
		}
		for _, c := range o.Spec.EphemeralContainers {
			p.Spec.EphemeralContainers = append(p.Spec.EphemeralContainers, corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: c.Name, Image: c.Image}})
		}
		for _, v := range o.Spec.Volumes {
			if v.Image != nil {
				p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: v.Name, VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: v.Image.Reference}}})
			}
		}
		return p, nil
	case *corev1.Node:
		return &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: o.Name, ResourceVersion: o.ResourceVersion},
			Status:     corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{OperatingSystem: o.Status.NodeInfo.OperatingSystem, Architecture: o.Status.NodeInfo.Architecture}},
		}, nil
	}
	return obj, nil
}

var everything = labels.Everything()
