package prepull

import (
	"fmt"
	"slices"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// Status is where a group's images are, counted by node.
type Status struct {
	// Wanted is the number of nodes the group selects (the DaemonSet's desired pods).
	Wanted int
	// Pulled nodes run a ready pod with every current image; Failed nodes have a current pod
	// that cannot pull or start one; the rest are Pulling.
	Pulled, Pulling, Failed int
	// Failures say, per failed node, which image and why: "node: image: reason: message".
	Failures []string
}

// pullFailures are the waiting reasons that need a person, not more time.
var pullFailures = []string{
	"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
	"CreateContainerConfigError", "CreateContainerError", "CrashLoopBackOff", "RunContainerError",
}

// Summarize counts a group's nodes from its DaemonSet and pods. A pod is current when it runs
// the images of the DaemonSet's template; during a re-pin rollout a node whose only pod is old
// is still pulling.
func Summarize(ds *appsv1.DaemonSet, pods []corev1.Pod) Status {
	want := images(ds.Spec.Template.Spec.Containers)
	type node struct{ pulled, failed bool }
	nodes := map[string]*node{}
	var failures []string
	for i := range pods {
		p := &pods[i]
		if p.DeletionTimestamp != nil || p.Spec.NodeName == "" || !slices.Equal(images(p.Spec.Containers), want) {
			continue
		}
		n := nodes[p.Spec.NodeName]
		if n == nil {
			n = &node{}
			nodes[p.Spec.NodeName] = n
		}
		if ready(p) {
			n.pulled = true
			continue
		}
		for _, cs := range append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...) {
			if w := cs.State.Waiting; w != nil && slices.Contains(pullFailures, w.Reason) {
				n.failed = true
				failures = append(failures, fmt.Sprintf("%s: %s: %s: %s", p.Spec.NodeName, cs.Image, w.Reason, w.Message))
			}
		}
	}
	s := Status{Wanted: int(ds.Status.DesiredNumberScheduled)}
	for _, n := range nodes {
		switch {
		case n.pulled:
			s.Pulled++
		case n.failed:
			s.Failed++
		}
	}
	s.Pulling = max(0, s.Wanted-s.Pulled-s.Failed)
	sort.Strings(failures)
	s.Failures = failures
	return s
}

func images(cs []corev1.Container) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Image
	}
	return out
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
