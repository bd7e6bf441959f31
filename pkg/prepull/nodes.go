package prepull

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/pullgate/pullgate/pkg/policy"
)

// Problems says why a group has nothing to pull yet (its images could not be pinned); the
// Reconciler implements it.
type Problems interface {
	Problem(group string) string
}

// Taints removes the groups' startup taints from nodes: once every group that waits on a taint
// has a ready pod on the node (every image pulled), or when the slowest of them reaches its
// startupTaintTimeout, with a Warning Event on the node saying what did not arrive and why. It
// only ever touches taints some group of the policy names.
type Taints struct {
	Client   client.Client
	Policy   PolicySource
	Settings Settings
	Events   events.EventRecorder
	Problems Problems
	Now      func() time.Time

	changes chan event.TypedGenericEvent[client.Object]
	mu      sync.Mutex
	// since is when this controller first saw a startup taint on a node ("node/key"): the
	// timeout counts from there (a new leader starts counting anew; the node's creation time
	// would count an old node's taint, added by hand, as long expired).
	since map[string]time.Time
}

// SetupWithManager registers the controller: Nodes (through TrimNode's cache), the pre-pull
// pods, mapped to their node, and policy changes (PolicyChanged).
func (r *Taints) SetupWithManager(mgr ctrl.Manager) error {
	r.changes = make(chan event.TypedGenericEvent[client.Object], 1024)
	owned := predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetLabels()[ManagedByLabel] == ManagedBy })
	toNode := handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
		if p, ok := o.(*corev1.Pod); ok && p.Spec.NodeName != "" {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: p.Spec.NodeName}}}
		}
		return nil
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("prepull-taints").
		For(&corev1.Node{}).
		Watches(&corev1.Pod{}, toNode, builder.WithPredicates(owned)).
		WatchesRawSource(source.Channel(r.changes, &handler.EnqueueRequestForObject{})).
		Complete(r)
}

// PolicyChanged queues every node: a group may have gained or lost a startup taint.
func (r *Taints) PolicyChanged(ctx context.Context) {
	if r.changes == nil {
		return
	}
	var nodes corev1.NodeList
	if err := r.Client.List(ctx, &nodes); err != nil {
		log.FromContext(ctx).V(1).Info("Listing nodes for the startup taints", "error", err.Error()) // before the cache starts; it lists every node then
		return
	}
	for _, n := range nodes.Items {
		select {
		case r.changes <- event.TypedGenericEvent[client.Object]{Object: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name}}}:
		default:
		}
	}
}

// Reconcile decides, for each startup taint of the node that a group names, whether to remove it.
func (r *Taints) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	var node corev1.Node
	if err := r.Client.Get(ctx, types.NamespacedName{Name: req.Name}, &node); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.Name, nil)
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, err
	}
	pol := r.Policy.Current()
	if pol == nil {
		return reconcile.Result{RequeueAfter: retryInterval}, nil
	}
	groups := pol.Policy().Prepull
	var keep []string
	var wait time.Duration
	var remove []policy.StartupTaint
	var notes []func()
	for _, taint := range startupTaints(groups, &node) {
		key := node.Name + "/" + taint.Key
		keep = append(keep, key)
		waited := now().Sub(r.firstSeen(key, now()))
		states, err := r.groupsOnNode(ctx, groups, taint, &node)
		if err != nil {
			return reconcile.Result{}, err
		}
		v := DecideTaint(states, waited)
		if !v.Remove {
			if wait == 0 || v.Wait < wait {
				wait = v.Wait
			}
			continue
		}
		remove = append(remove, taint)
		notes = append(notes, r.note(&node, taint, states, v, waited))
	}
	if len(remove) > 0 {
		next := node.DeepCopy()
		next.Spec.Taints = slices.DeleteFunc(next.Spec.Taints, func(t corev1.Taint) bool {
			return slices.ContainsFunc(remove, func(s policy.StartupTaint) bool { return s.Matches(t) })
		})
		// The optimistic lock: a taint added or removed meanwhile by someone else is not lost.
		if err := r.Client.Patch(ctx, next, client.MergeFromWithOptions(&node, client.MergeFromWithOptimisticLock{})); err != nil {
			return reconcile.Result{}, fmt.Errorf("removing the startup taint from node %s: %w", node.Name, err)
		}
		for _, n := range notes {
			n()
		}
		keep = slices.DeleteFunc(keep, func(k string) bool {
			return slices.ContainsFunc(remove, func(s policy.StartupTaint) bool { return k == node.Name+"/"+s.Key })
		})
	}
	r.forget(node.Name, keep)
	if wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	return reconcile.Result{}, nil
}

// startupTaints are the node's taints that some group names, once each.
func startupTaints(groups []policy.Prepull, node *corev1.Node) []policy.StartupTaint {
	var out []policy.StartupTaint
	for _, g := range groups {
		s := g.StartupTaint
		if s == nil || !slices.ContainsFunc(node.Spec.Taints, s.Matches) {
			continue
		}
		if !slices.ContainsFunc(out, func(o policy.StartupTaint) bool { return o.Key == s.Key && o.Effect == s.Effect }) {
			out = append(out, policy.StartupTaint{Key: s.Key, Effect: s.Effect})
		}
	}
	return out
}

// groupsOnNode: every group waiting on the taint that places a pod on the node, and whether that
// pod is ready with the group's current images.
func (r *Taints) groupsOnNode(ctx context.Context, groups []policy.Prepull, taint policy.StartupTaint, node *corev1.Node) ([]GroupOnNode, error) {
	var out []GroupOnNode
	for _, g := range groups {
		if g.StartupTaint == nil || g.StartupTaint.Key != taint.Key || g.StartupTaint.Effect != taint.Effect || !Selects(g, node) {
			continue
		}
		st := GroupOnNode{Group: g.Name, Timeout: g.StartupTaintTimeout.Duration}
		var ds appsv1.DaemonSet
		err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.Settings.Namespace, Name: r.Settings.Name(g.Name)}, &ds)
		switch {
		case apierrors.IsNotFound(err):
			st.Problem = "no pre-pull DaemonSet yet"
			if p := r.problem(g.Name); p != "" {
				st.Problem += ": " + p
			}
			out = append(out, st)
			continue
		case err != nil:
			return nil, err
		}
		var pods corev1.PodList
		if err := r.Client.List(ctx, &pods, client.InNamespace(ds.Namespace), client.MatchingLabels{ManagedByLabel: ManagedBy, GroupLabel: g.Name}); err != nil {
			return nil, err
		}
		pods.Items = slices.DeleteFunc(pods.Items, func(p corev1.Pod) bool { return p.Spec.NodeName != node.Name })
		s := Summarize(&ds, pods.Items)
		st.Pulled = s.Pulled > 0
		switch {
		case len(s.Failures) > 0:
			st.Problem = strings.Join(s.Failures, "; ")
		case len(pods.Items) == 0:
			st.Problem = "no pre-pull pod on the node"
		default:
			st.Problem = "still pulling"
		}
		if p := r.problem(g.Name); p != "" {
			st.Problem += "; " + p
		}
		out = append(out, st)
	}
	return out, nil
}

func (r *Taints) problem(group string) string {
	if r.Problems == nil {
		return ""
	}
	return r.Problems.Problem(group)
}

// note returns the Event that says why the taint went: Normal when every group pulled, Warning
// when a timeout freed the node.
func (r *Taints) note(node *corev1.Node, taint policy.StartupTaint, states []GroupOnNode, v TaintVerdict, waited time.Duration) func() {
	return func() {
		if r.Events == nil {
			return
		}
		regarding := &corev1.Node{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"}, ObjectMeta: metav1.ObjectMeta{Name: node.Name, UID: node.UID}}
		var names []string
		for _, s := range states {
			names = append(names, s.Group)
		}
		switch {
		case len(states) == 0:
			r.Events.Eventf(regarding, nil, corev1.EventTypeNormal, "StartupTaintRemoved", "Prepull",
				"Removed startup taint %s:%s: no pre-pull group places a pod on this node", taint.Key, taint.Effect)
		case len(v.TimedOut) == 0:
			r.Events.Eventf(regarding, nil, corev1.EventTypeNormal, "StartupTaintRemoved", "Prepull",
				"Removed startup taint %s:%s after %s: group(s) %s pulled every image", taint.Key, taint.Effect, waited.Round(time.Second), strings.Join(names, ", "))
		default:
			var why []string
			for _, s := range v.TimedOut {
				why = append(why, fmt.Sprintf("group %s (timeout %s): %s", s.Group, s.Timeout, s.Problem))
			}
			r.Events.Eventf(regarding, nil, corev1.EventTypeWarning, "StartupTaintTimeout", "Prepull",
				"Removed startup taint %s:%s after %s without the images, so the node is not blocked; check the mirror and the pull secrets: %s",
				taint.Key, taint.Effect, waited.Round(time.Second), strings.Join(why, "; "))
		}
	}
}

func (r *Taints) firstSeen(key string, now time.Time) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.since == nil {
		r.since = map[string]time.Time{}
	}
	t, ok := r.since[key]
	if !ok {
		r.since[key], t = now, now
	}
	return t
}

// forget drops the node's first-seen times except those in keep.
func (r *Taints) forget(node string, keep []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.since {
		if strings.HasPrefix(k, node+"/") && !slices.Contains(keep, k) {
			delete(r.since, k)
		}
	}
}
