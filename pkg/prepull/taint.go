package prepull

import (
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"

	"github.com/pullgate/pullgate/pkg/policy"
)

// TrimNode is the Node informer's transform: the taint controller reads only the name, labels
// and taints (and patches with the resourceVersion), so the cache holds nothing else of the
// node's status, images or conditions.
func TrimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	return &corev1.Node{
		TypeMeta: n.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{
			Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion,
			Labels: n.Labels, CreationTimestamp: n.CreationTimestamp, DeletionTimestamp: n.DeletionTimestamp,
		},
		Spec: corev1.NodeSpec{Taints: n.Spec.Taints},
	}, nil
}

// Selects says whether the group's DaemonSet places a pod on the node, as the DaemonSet
// controller decides: the node selector and the required node affinity match the node's labels
// (and name), and the group's tolerations, with its own startup taint, cover every NoSchedule and
// NoExecute taint (the node.kubernetes.io/ ones, which DaemonSet pods tolerate by default,
// aside).
func Selects(g policy.Prepull, node *corev1.Node) bool {
	if !labels.SelectorFromSet(g.NodeSelector).Matches(labels.Set(node.Labels)) {
		return false
	}
	if a := g.Affinity; a != nil && a.NodeAffinity != nil && a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		if !slices.ContainsFunc(a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms,
			func(t corev1.NodeSelectorTerm) bool { return termMatches(t, node) }) {
			return false
		}
	}
	tols := g.Tolerations
	if t := g.StartupTaint; t != nil {
		tols = append(slices.Clone(tols), corev1.Toleration{Key: t.Key, Operator: corev1.TolerationOpExists, Effect: t.Effect})
	}
	for _, t := range node.Spec.Taints {
		if t.Effect == corev1.TaintEffectPreferNoSchedule || strings.HasPrefix(t.Key, "node.kubernetes.io/") {
			continue
		}
		if !slices.ContainsFunc(tols, func(tol corev1.Toleration) bool { return tol.ToleratesTaint(logr.Discard(), &t, false) }) {
			return false
		}
	}
	return true
}

var nodeSelectorOps = map[corev1.NodeSelectorOperator]selection.Operator{
	corev1.NodeSelectorOpIn: selection.In, corev1.NodeSelectorOpNotIn: selection.NotIn,
	corev1.NodeSelectorOpExists: selection.Exists, corev1.NodeSelectorOpDoesNotExist: selection.DoesNotExist,
	corev1.NodeSelectorOpGt: selection.GreaterThan, corev1.NodeSelectorOpLt: selection.LessThan,
}

// termMatches: every expression of the term holds (an empty term matches no node, as in the
// scheduler); matchFields can only name metadata.name.
func termMatches(t corev1.NodeSelectorTerm, node *corev1.Node) bool {
	if len(t.MatchExpressions) == 0 && len(t.MatchFields) == 0 {
		return false
	}
	match := func(reqs []corev1.NodeSelectorRequirement, set labels.Set) bool {
		for _, r := range reqs {
			req, err := labels.NewRequirement(r.Key, nodeSelectorOps[r.Operator], r.Values)
			if err != nil || !req.Matches(set) {
				return false
			}
		}
		return true
	}
	return match(t.MatchExpressions, labels.Set(node.Labels)) && match(t.MatchFields, labels.Set{"metadata.name": node.Name})
}

// GroupOnNode is where one group that waits on a node's startup taint stands on that node.
type GroupOnNode struct {
	Group   string
	Timeout time.Duration
	Pulled  bool
	// Problem says why the group is not pulled there (pull errors, unpinned images), for the
	// Event that removes the taint at the timeout.
	Problem string
}

// TaintVerdict is what to do with one startup taint on a node.
type TaintVerdict struct {
	// Remove the taint: every group waiting on it has pulled, or reached its timeout.
	Remove bool
	// TimedOut are the groups that had not pulled when their timeout came.
	TimedOut []GroupOnNode
	// Wait is, when not removing, how long until the first pending group's timeout.
	Wait time.Duration
}

// DecideTaint decides, for the groups waiting on one startup taint of a node that has carried
// it for waited, whether to remove it now.
func DecideTaint(groups []GroupOnNode, waited time.Duration) TaintVerdict {
	v := TaintVerdict{Remove: true}
	for _, g := range groups {
		switch {
		case g.Pulled:
		case waited >= g.Timeout:
			v.TimedOut = append(v.TimedOut, g)
		default:
			left := g.Timeout - waited
			if v.Remove || left < v.Wait {
				v.Wait = left
			}
			v.Remove = false
		}
	}
	if !v.Remove {
		v.TimedOut = nil
	}
	return v
}
