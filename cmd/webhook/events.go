package main

import (
	"context"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/pullgate/pullgate/pkg/mutate"
)

// maxEventChanges keeps an Event's message readable; the audit annotation has the full list.
const maxEventChanges = 8

// eventRecorder turns audit mode's would-be changes into Events on the pod. client-go's
// broadcaster sends them asynchronously and aggregates repeats, so a burst of identical pods
// neither slows admission nor floods the API server.
type eventRecorder struct {
	recorder record.EventRecorder
}

var _ mutate.Recorder = (*eventRecorder)(nil)

func newEventRecorder(ctx context.Context, client kubernetes.Interface) *eventRecorder {
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	return &eventRecorder{recorder: b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "pullgate"})}
}

func (e *eventRecorder) WouldChange(namespace, pod string, changes []mutate.Change) {
	ref := &corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: namespace, Name: pod}
	lines := make([]string, 0, maxEventChanges+1)
	for i, c := range changes {
		if i == maxEventChanges {
			lines = append(lines, "...")
			break
		}
		lines = append(lines, c.String())
	}
	e.recorder.Eventf(ref, corev1.EventTypeNormal, "PullgateAudit", "audit mode, not applied: %s", strings.Join(lines, "; "))
}
