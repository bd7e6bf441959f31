package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
)

// NodeNamespace creates a namespace with the pullgate.dev/mode label set to mode ("" for
// none) and labels, and, when withSecret, the mirror's pull secret in it.
func (e *Env) NodeNamespace(ctx context.Context, prefix, mode string, labels map[string]string, withSecret bool) (string, error) {
	l := map[string]string{}
	for k, v := range labels {
		l[k] = v
	}
	if mode != "" {
		l[ModeLabel] = mode
	}
	ns, err := e.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-", Labels: l},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	if withSecret {
		if err := e.CreateMirrorSecret(ctx, ns.Name); err != nil {
			return "", err
		}
	}
	return ns.Name, nil
}

// PodStarted says a pod is as far as a test wants: every container running and ready, or the
// pod Succeeded.
func PodStarted(p *corev1.Pod) bool {
	if p.Status.Phase == corev1.PodSucceeded {
		return true
	}
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// WaitPod polls pod ns/name until cond holds. On timeout the error shows the pod's container
// states and events.
func (e *Env) WaitPod(ctx context.Context, ns, name string, timeout time.Duration, cond func(*corev1.Pod) bool) (*corev1.Pod, error) {
	var last *corev1.Pod
	err := Poll(ctx, timeout, func(ctx context.Context) (bool, error) {
		p, err := e.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = p
		if p.Status.Phase == corev1.PodFailed && !cond(p) {
			return false, fmt.Errorf("pod %s/%s failed: %s", ns, name, e.describe(ctx, p))
		}
		return cond(p), nil
	})
	if err != nil && last != nil {
		return last, fmt.Errorf("%w: %s", err, e.describe(ctx, last))
	}
	return last, err
}

// describe is a pod's container states and events in one line each, for failure messages.
func (e *Env) describe(ctx context.Context, p *corev1.Pod) string {
	var b strings.Builder
	fmt.Fprintf(&b, "phase %s", p.Status.Phase)
	all := append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...)
	for _, s := range all {
		switch {
		case s.State.Waiting != nil:
			fmt.Fprintf(&b, "\n  %s waiting: %s: %s", s.Name, s.State.Waiting.Reason, s.State.Waiting.Message)
		case s.State.Terminated != nil:
			fmt.Fprintf(&b, "\n  %s terminated: %s (exit %d)", s.Name, s.State.Terminated.Reason, s.State.Terminated.ExitCode)
		case s.State.Running != nil:
			fmt.Fprintf(&b, "\n  %s running", s.Name)
		}
	}
	for _, ev := range e.Events(ctx, p.Namespace, p.Name) {
		fmt.Fprintf(&b, "\n  event %s: %s", ev.Reason, ev.Message)
	}
	return b.String()
}

// Events are the events of pod ns/name, oldest first.
func (e *Env) Events(ctx context.Context, ns, name string) []corev1.Event {
	list, err := e.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("involvedObject.name", name).String(),
	})
	if err != nil {
		return nil
	}
	evs := list.Items
	sort.SliceStable(evs, func(i, j int) bool { return eventTime(evs[i]).Before(eventTime(evs[j])) })
	return evs
}

func eventTime(ev corev1.Event) time.Time {
	switch {
	case !ev.EventTime.IsZero():
		return ev.EventTime.Time
	case !ev.LastTimestamp.IsZero():
		return ev.LastTimestamp.Time
	}
	return ev.FirstTimestamp.Time
}

// EventMessages are the messages of pod ns/name's events with reason, oldest first.
func (e *Env) EventMessages(ctx context.Context, ns, name, reason string) []string {
	var out []string
	for _, ev := range e.Events(ctx, ns, name) {
		if ev.Reason == reason {
			out = append(out, ev.Message)
		}
	}
	return out
}

// BusyboxPod is a pod running sh -c script in each container named by images (name "c<i>").
func BusyboxPod(name string, script string, images ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			// Tests delete pods to free the node; nothing here needs time to shut down.
			TerminationGracePeriodSeconds: new(int64),
		},
	}
	for i, img := range images {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{
			Name: fmt.Sprintf("c%d", i), Image: img, Command: []string{"sh", "-c", script},
		})
	}
	return p
}
