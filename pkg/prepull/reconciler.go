package prepull

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/policy"
)

// retryInterval is how soon a group with an unresolved tag tries again, when the cache TTL is
// longer: a mirror that comes back should not wait minutes to be used.
const retryInterval = 15 * time.Second

// ConditionPinned is the DaemonSet condition that says whether every image is pinned to its
// current digest.
const ConditionPinned appsv1.DaemonSetConditionType = "pullgate.dev/Pinned"

// PolicySource hands out the policy in force.
type PolicySource interface {
	Current() *policy.Compiled
}

// Reconciler keeps one DaemonSet per policy group in Settings.Namespace: it re-resolves the
// group's tags on the cache TTL, applies the DaemonSet when its pinned references change, deletes
// DaemonSets of removed groups, and reports status as metrics, a condition and Events.
type Reconciler struct {
	Client   client.Client
	Policy   PolicySource
	Resolver contract.Resolver
	Settings Settings
	Events   events.EventRecorder
	Now      func() time.Time

	changes chan event.TypedGenericEvent[client.Object]
	mu      sync.Mutex
	failing map[string]string // group -> the failures last reported, so Events are not repeated
	// problems holds, per group, why images could not be pinned at the last attempt (Problem).
	problems map[string]string
}

var _ Problems = (*Reconciler)(nil)

// Problem says why some of the group's images could not be pinned at the last attempt, or "".
func (r *Reconciler) Problem(group string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.problems[group]
}

func (r *Reconciler) setProblem(group, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.problems == nil {
		r.problems = map[string]string{}
	}
	if msg == "" {
		delete(r.problems, group)
		return
	}
	r.problems[group] = msg
}

// SetupWithManager registers the controller: DaemonSets and pods the controller owns, and policy
// changes (PolicyChanged).
func (r *Reconciler) SetupWithManager(mgr manager.Manager) error {
	r.changes = make(chan event.TypedGenericEvent[client.Object], 256)
	owned := predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetLabels()[ManagedByLabel] == ManagedBy })
	err := ctrl.NewControllerManagedBy(mgr).
		Named("prepull").
		For(&appsv1.DaemonSet{}, builder.WithPredicates(owned)).
		Owns(&corev1.Pod{}).
		WatchesRawSource(source.Channel(r.changes, &handler.EnqueueRequestForObject{})).
		Complete(r)
	if err != nil {
		return err
	}
	// Once leader (and after every restart): every group and every owned DaemonSet, so groups
	// added or removed while no controller ran converge.
	return mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		r.PolicyChanged(ctx)
		<-ctx.Done()
		return nil
	}))
}

// PolicyChanged queues every group of the policy in force and every DaemonSet the controller
// owns. It never blocks: a change dropped while the queue is full is covered by the next one.
func (r *Reconciler) PolicyChanged(ctx context.Context) {
	if r.changes == nil {
		return
	}
	names := map[string]bool{}
	if pol := r.Policy.Current(); pol != nil {
		for _, g := range pol.Policy().Prepull {
			names[r.Settings.Name(g.Name)] = true
		}
	}
	var list appsv1.DaemonSetList
	if err := r.Client.List(ctx, &list, client.InNamespace(r.Settings.Namespace), client.MatchingLabels{ManagedByLabel: ManagedBy}); err == nil {
		for _, ds := range list.Items {
			names[ds.Name] = true
		}
	}
	for n := range names {
		select {
		case r.changes <- event.TypedGenericEvent[client.Object]{Object: &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: n, Namespace: r.Settings.Namespace}}}:
		default:
		}
	}
}

// Reconcile brings one group's DaemonSet to what the policy and the registries say now.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	logger := log.FromContext(ctx)
	if r.Now == nil {
		r.Now = time.Now
	}
	if req.Namespace != r.Settings.Namespace {
		return reconcile.Result{}, nil
	}
	pol := r.Policy.Current()
	if pol == nil {
		return reconcile.Result{RequeueAfter: retryInterval}, nil
	}
	var cur *appsv1.DaemonSet
	var got appsv1.DaemonSet
	switch err := r.Client.Get(ctx, req.NamespacedName, &got); {
	case err == nil:
		cur = &got
	case !apierrors.IsNotFound(err):
		return reconcile.Result{}, err
	}
	g, ok := r.group(pol, req.Name)
	if !ok {
		return reconcile.Result{}, r.remove(ctx, cur)
	}
	ttl := pol.Policy().Resolve.CacheTTL.Duration
	pins, err := PinGroup(ctx, r.Resolver, pol, g, LastPinned(cur), pol.ResolveTimeout())
	if err != nil {
		if ctx.Err() != nil {
			return reconcile.Result{}, err
		}
		r.setProblem(g.Name, "cannot be planned: "+oneLine(err))
		r.event(cur, corev1.EventTypeWarning, "PolicyError", "Plan", "Group %s cannot be planned: %v", g.Name, err)
		return reconcile.Result{RequeueAfter: ttl}, nil
	}
	requeue := ttl
	r.setProblem(g.Name, "")
	if len(pins.Errors) > 0 {
		r.setProblem(g.Name, fmt.Sprintf("%d image(s) not pinned: %s", len(pins.Errors), oneLine(errors.Join(pins.Errors...))))
	}
	unpinnedGauge.WithLabelValues(g.Name).Set(float64(len(pins.Errors)))
	if len(pins.Errors) > 0 {
		requeue = min(ttl, retryInterval)
		resolveFailures.WithLabelValues(g.Name).Add(float64(len(pins.Errors)))
		logger.Info("Some images could not be pinned", "group", g.Name, "errors", errors.Join(pins.Errors...).Error(), "kept", len(pins.Kept), "dropped", len(pins.Dropped))
	}
	if len(pins.Images) == 0 {
		r.event(cur, corev1.EventTypeWarning, "NothingPinned", "Resolve",
			"No image of group %s could be pinned, so nothing is pre-pulled yet; check that the mirror serves them: %v", g.Name, oneLine(errors.Join(pins.Errors...)))
		return reconcile.Result{RequeueAfter: requeue}, nil
	}
	s := r.Settings
	s.PullSecrets = append(slices.Clone(pol.Policy().ImagePullSecrets), s.PullSecrets...)
	want := DaemonSet(g, pins.Images, s)
	if cur, err = r.apply(ctx, g, cur, want); err != nil {
		return reconcile.Result{}, err
	}
	if err := r.setCondition(ctx, cur, pins); err != nil {
		return reconcile.Result{}, err
	}
	r.reportStatus(ctx, g.Name, cur)
	return reconcile.Result{RequeueAfter: requeue}, nil
}

func (r *Reconciler) group(pol *policy.Compiled, dsName string) (policy.Prepull, bool) {
	for _, g := range pol.Policy().Prepull {
		if r.Settings.Name(g.Name) == dsName {
			return g, true
		}
	}
	return policy.Prepull{}, false
}

// remove deletes the DaemonSet of a group no longer in the policy, if the controller owns it.
func (r *Reconciler) remove(ctx context.Context, cur *appsv1.DaemonSet) error {
	if cur == nil || cur.Labels[ManagedByLabel] != ManagedBy {
		return nil
	}
	group := cur.Labels[GroupLabel]
	uid := cur.UID
	err := r.Client.Delete(ctx, cur, client.Preconditions{UID: &uid}, client.PropagationPolicy(metav1.DeletePropagationBackground))
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	forget(group)
	r.setProblem(group, "")
	log.FromContext(ctx).Info("Deleted the DaemonSet of a group no longer in the policy", "group", group, "daemonSet", cur.Name)
	return nil
}

// apply creates or updates the DaemonSet; an update happens only when the desired object
// changed, and it keeps the annotations others put there.
func (r *Reconciler) apply(ctx context.Context, g policy.Prepull, cur, want *appsv1.DaemonSet) (*appsv1.DaemonSet, error) {
	now := r.Now().UTC().Format(time.RFC3339)
	if cur == nil {
		want.Annotations[RepinnedAnnotation] = now
		if err := r.Client.Create(ctx, want); err != nil {
			return nil, fmt.Errorf("creating DaemonSet %s: %w", want.Name, err)
		}
		repinGauge.WithLabelValues(g.Name).Set(float64(r.Now().Unix()))
		r.event(want, corev1.EventTypeNormal, "Pinned", "Create", "Pre-pulling %d image(s) on the nodes of group %s: %s", len(want.Spec.Template.Spec.Containers), g.Name, describe(LastPinned(want)))
		return want, nil
	}
	if cur.Annotations[SpecHashAnnotation] == want.Annotations[SpecHashAnnotation] {
		if t, err := time.Parse(time.RFC3339, cur.Annotations[RepinnedAnnotation]); err == nil {
			repinGauge.WithLabelValues(g.Name).Set(float64(t.Unix()))
		}
		return cur, nil
	}
	before, after := LastPinned(cur), LastPinned(want)
	moved := movedImages(before, after)
	next := cur.DeepCopy()
	next.Labels = want.Labels
	next.OwnerReferences = want.OwnerReferences
	next.Spec = want.Spec
	if next.Annotations == nil {
		next.Annotations = map[string]string{}
	}
	for k, v := range want.Annotations {
		next.Annotations[k] = v
	}
	if len(moved) > 0 || !sameKeys(before, after) {
		next.Annotations[RepinnedAnnotation] = now
	}
	if err := r.Client.Update(ctx, next); err != nil {
		return nil, fmt.Errorf("updating DaemonSet %s: %w", next.Name, err)
	}
	if t, err := time.Parse(time.RFC3339, next.Annotations[RepinnedAnnotation]); err == nil {
		repinGauge.WithLabelValues(g.Name).Set(float64(t.Unix()))
	}
	if len(moved) > 0 {
		r.event(next, corev1.EventTypeNormal, "Repinned", "Update", "Tag moved, rolling %s node(s) at a time; each node keeps the old image until the new one is pulled: %s",
			want.Spec.UpdateStrategy.RollingUpdate.MaxSurge.String(), strings.Join(moved, "; "))
	} else {
		r.event(next, corev1.EventTypeNormal, "Updated", "Update", "Group %s changed in the policy; now pre-pulling: %s", g.Name, describe(after))
	}
	return next, nil
}

// setCondition records on the DaemonSet whether every image is pinned to its current digest.
func (r *Reconciler) setCondition(ctx context.Context, ds *appsv1.DaemonSet, pins Pins) error {
	c := appsv1.DaemonSetCondition{Type: ConditionPinned, Status: corev1.ConditionTrue, Reason: "AllPinned", Message: "Every image is pinned to the digest its tag names now."}
	if len(pins.Errors) > 0 {
		c.Status, c.Reason = corev1.ConditionFalse, "ResolveFailed"
		c.Message = fmt.Sprintf("%d image(s) could not be resolved; %d keep their last pinned digest, %d are not pre-pulled: %s",
			len(pins.Errors), len(pins.Kept), len(pins.Dropped), oneLine(errors.Join(pins.Errors...)))
	}
	i := slices.IndexFunc(ds.Status.Conditions, func(x appsv1.DaemonSetCondition) bool { return x.Type == ConditionPinned })
	if i >= 0 {
		old := ds.Status.Conditions[i]
		if old.Status == c.Status && old.Reason == c.Reason && old.Message == c.Message {
			return nil
		}
	}
	if c.Status == corev1.ConditionFalse {
		r.event(ds, corev1.EventTypeWarning, "ResolveFailed", "Resolve", "%s; fix the mirror or the tag, pullgate retries every %s", c.Message, retryInterval)
	}
	c.LastTransitionTime = metav1.NewTime(r.Now())
	next := ds.DeepCopy()
	if i >= 0 {
		next.Status.Conditions[i] = c
	} else {
		next.Status.Conditions = append(next.Status.Conditions, c)
	}
	if err := r.Client.Status().Update(ctx, next); err != nil {
		if apierrors.IsConflict(err) {
			return nil // the DaemonSet controller wrote status; the next reconcile sets it
		}
		return fmt.Errorf("updating the status of DaemonSet %s: %w", ds.Name, err)
	}
	*ds = *next
	return nil
}

// reportStatus counts the group's nodes into the metrics, with an Event when nodes fail.
func (r *Reconciler) reportStatus(ctx context.Context, group string, ds *appsv1.DaemonSet) {
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(ds.Namespace), client.MatchingLabels{ManagedByLabel: ManagedBy, GroupLabel: group}); err != nil {
		log.FromContext(ctx).Error(err, "Listing pre-pull pods", "group", group)
		return
	}
	st := Summarize(ds, pods.Items)
	recordStatus(group, st)
	msg := strings.Join(st.Failures, "; ")
	r.mu.Lock()
	if r.failing == nil {
		r.failing = map[string]string{}
	}
	changed := r.failing[group] != msg
	r.failing[group] = msg
	r.mu.Unlock()
	if changed && msg != "" {
		r.event(ds, corev1.EventTypeWarning, "PullFailed", "Pull", "%d node(s) cannot pull; check the mirror, the pull secrets and the node's disk: %s", st.Failed, msg)
	}
}

// event records an Event on the DaemonSet or, before there is one, on the controller's own
// Deployment.
func (r *Reconciler) event(ds *appsv1.DaemonSet, typ, reason, action, note string, args ...any) {
	if r.Events == nil {
		return
	}
	var regarding runtime.Object
	switch {
	case ds != nil && ds.UID != "":
		regarding = ds
	case r.Settings.Owner != nil:
		o := r.Settings.Owner
		regarding = &appsv1.Deployment{
			TypeMeta:   metav1.TypeMeta{APIVersion: o.APIVersion, Kind: o.Kind},
			ObjectMeta: metav1.ObjectMeta{Name: o.Name, Namespace: r.Settings.Namespace, UID: o.UID},
		}
	default:
		return
	}
	r.Events.Eventf(regarding, nil, typ, reason, action, note, args...)
}

// movedImages says, for each image whose reference changed, from what to what.
func movedImages(before, after map[string]string) []string {
	var out []string
	for src, ref := range after {
		if old, ok := before[src]; ok && old != ref {
			out = append(out, fmt.Sprintf("%s: %s -> %s", src, digestOf(old), digestOf(ref)))
		}
	}
	slices.Sort(out)
	return out
}

func sameKeys(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}

func describe(pins map[string]string) string {
	out := make([]string, 0, len(pins))
	for src, ref := range pins {
		out = append(out, src+" as "+ref)
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

func digestOf(ref string) string {
	if d := (Pinned{Ref: ref}).Digest(); d != "" {
		return d
	}
	return ref
}

func oneLine(err error) string {
	if err == nil {
		return ""
	}
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}
