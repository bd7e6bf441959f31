package prepull_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/pullgate/pullgate/pkg/policy"
	"github.com/pullgate/pullgate/pkg/prepull"
)

const taintPolicy = `apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors: [{registry: docker.io, mirror: mirror.example.com/hub}]
prepull:
  - name: gpu
    images: [busybox:1]
    nodeSelector: {gpu: "true"}
    startupTaint: {}
    startupTaintTimeout: 1m
  - name: all
    images: [busybox:2]
    affinity:
      nodeAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a, b]}]}]
    startupTaint: {}
    startupTaintTimeout: 3m
  - name: other
    images: [busybox:3]
`

var startup = corev1.Taint{Key: policy.PrepullTaintKey, Value: "pending", Effect: corev1.TaintEffectNoSchedule}

func node(labels map[string]string, taints ...corev1.Taint) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: labels, ResourceVersion: "1"}, Spec: corev1.NodeSpec{Taints: taints}}
}

// TestSelects: a group waits on a node only where its DaemonSet places a pod: node selector,
// required node affinity, and tolerations (its own startup taint is tolerated; node.kubernetes.io
// taints are tolerated by every DaemonSet).
func TestSelects(t *testing.T) {
	t.Parallel()
	groups := load(t, taintPolicy).Policy().Prepull
	gpu, all := groups[0], groups[1]
	notReady := corev1.Taint{Key: "node.kubernetes.io/not-ready", Effect: corev1.TaintEffectNoSchedule}
	dedicated := corev1.Taint{Key: "dedicated", Value: "ml", Effect: corev1.TaintEffectNoSchedule}
	for _, tc := range []struct {
		name  string
		g     policy.Prepull
		n     *corev1.Node
		wants bool
	}{
		{"selector matches, own taint", gpu, node(map[string]string{"gpu": "true"}, startup, notReady), true},
		{"selector does not match", gpu, node(map[string]string{"gpu": "false"}, startup), false},
		{"untolerated taint", gpu, node(map[string]string{"gpu": "true"}, startup, dedicated), false},
		{"affinity matches", all, node(map[string]string{"zone": "b"}, startup), true},
		{"affinity does not match", all, node(map[string]string{"zone": "c"}, startup), false},
		{"affinity label missing", all, node(nil, startup), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := prepull.Selects(tc.g, tc.n); got != tc.wants {
				t.Errorf("Selects = %v, want %v", got, tc.wants)
			}
		})
	}
}

func TestDecideTaint(t *testing.T) {
	t.Parallel()
	pulled := prepull.GroupOnNode{Group: "a", Timeout: time.Minute, Pulled: true}
	pending := prepull.GroupOnNode{Group: "b", Timeout: 3 * time.Minute, Problem: "ErrImagePull"}
	for _, tc := range []struct {
		name     string
		groups   []prepull.GroupOnNode
		waited   time.Duration
		remove   bool
		timedOut int
		wait     time.Duration
	}{
		{"no group selects the node", nil, 0, true, 0, 0},
		{"all pulled", []prepull.GroupOnNode{pulled}, time.Second, true, 0, 0},
		{"one pending", []prepull.GroupOnNode{pulled, pending}, time.Minute, false, 0, 2 * time.Minute},
		{"pending past its timeout", []prepull.GroupOnNode{pulled, pending}, 3 * time.Minute, true, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := prepull.DecideTaint(tc.groups, tc.waited)
			if v.Remove != tc.remove || len(v.TimedOut) != tc.timedOut || v.Wait != tc.wait {
				t.Errorf("verdict %+v, want remove %v, %d timed out, wait %s", v, tc.remove, tc.timedOut, tc.wait)
			}
		})
	}
}

type noted struct{ events []string }

// recorder records Events as "type reason: note".
type recorder struct{ n *noted }

func (r recorder) Eventf(_, _ runtime.Object, typ, reason, _, note string, args ...any) {
	r.n.events = append(r.n.events, typ+" "+reason+": "+fmt.Sprintf(note, args...))
}

// TestTaintsReconcile: a node keeps the startup taint while the group's pod is not ready, loses
// it once the pod is ready with the current images (Normal Event), and loses it at the timeout
// when the pod never gets ready, with a Warning Event naming the group and the reason; other
// taints stay.
func TestTaintsReconcile(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pol := &staticPolicy{load(t, taintPolicy)}
	g := pol.c.Policy().Prepull[0]
	ds := prepull.DaemonSet(g, []prepull.Pinned{{Source: "busybox:1", Ref: "mirror.example.com/hub/library/busybox:1@" + d1}}, settings)
	if tol := ds.Spec.Template.Spec.Tolerations; len(tol) != 1 || tol[0].Key != policy.PrepullTaintKey || tol[0].Operator != corev1.TolerationOpExists {
		t.Errorf("DaemonSet tolerations %+v, want the startup taint's", tol)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p1", Namespace: "pg", Labels: ds.Spec.Template.Labels},
		Spec:       corev1.PodSpec{NodeName: "n1", Containers: ds.Spec.Template.Spec.Containers},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
			Image: ds.Spec.Template.Spec.Containers[0].Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "connection refused"}},
		}}},
	}
	keep := corev1.Taint{Key: "example.com/other", Effect: corev1.TaintEffectPreferNoSchedule}
	n := node(map[string]string{"gpu": "true"}, startup, keep)
	c := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithObjects(n, ds, pod).Build()
	now := time.Unix(1000, 0)
	rec := &noted{}
	r := &prepull.Taints{Client: c, Policy: pol, Settings: settings, Events: recorder{rec}, Now: func() time.Time { return now }}
	req := reconcile.Request{}
	req.Name = "n1"
	taints := func() []string {
		t.Helper()
		var got corev1.Node
		if err := c.Get(ctx, req.NamespacedName, &got); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, t := range got.Spec.Taints {
			out = append(out, t.Key)
		}
		return out
	}

	out, err := r.Reconcile(ctx, req)
	if err != nil || out.RequeueAfter != time.Minute || len(taints()) != 2 {
		t.Fatalf("pulling: %v, requeue %s, taints %v; want the taint kept and a requeue at the timeout", err, out.RequeueAfter, taints())
	}
	now = now.Add(time.Minute)
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	if got := taints(); strings.Join(got, ",") != keep.Key {
		t.Errorf("after the timeout, taints %v, want only %s", got, keep.Key)
	}
	if len(rec.events) != 1 || !strings.HasPrefix(rec.events[0], "Warning StartupTaintTimeout") || !strings.Contains(rec.events[0], "group gpu") || !strings.Contains(rec.events[0], "ImagePullBackOff: connection refused") {
		t.Errorf("events %q, want one Warning naming the group and the pull error", rec.events)
	}

	// The node joins again with the taint; this time the pod is ready.
	var cur corev1.Node
	if err := c.Get(ctx, req.NamespacedName, &cur); err != nil {
		t.Fatal(err)
	}
	cur.Spec.Taints = append(cur.Spec.Taints, startup)
	if err := c.Update(ctx, &cur); err != nil {
		t.Fatal(err)
	}
	pod.Status = corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	if err := c.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	if out, err := r.Reconcile(ctx, req); err != nil || out.RequeueAfter != 0 {
		t.Fatalf("pulled: %v, requeue %s", err, out.RequeueAfter)
	}
	if got := taints(); strings.Join(got, ",") != keep.Key {
		t.Errorf("once pulled, taints %v, want only %s", got, keep.Key)
	}
	if len(rec.events) != 2 || !strings.HasPrefix(rec.events[1], "Normal StartupTaintRemoved") {
		t.Errorf("events %q, want a Normal StartupTaintRemoved", rec.events)
	}
	// A node no group names a taint for is left alone.
	if _, err := r.Reconcile(ctx, reconcile.Request{}); err != nil {
		t.Errorf("missing node: %v", err)
	}
}

var _ events.EventRecorder = recorder{}
