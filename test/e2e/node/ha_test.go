//go:build e2e

package node_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullgate/pullgate/test/e2e"
)

// TestHAUnderLoad: while a client creates pods continuously in an enforce namespace with
// failurePolicy Fail, one pullgate pod is deleted and then the chart is upgraded with a changed
// value (a rolling update). No creation fails and every stored pod is mutated. With both
// replicas stopped, Fail rejects opted-in pods while kube-system still schedules.
func TestHAUnderLoad(t *testing.T) {
	ctx := t.Context()
	regs := env.Node.Registries
	digest := pushBusybox(t, "e2e/ha:v1", "ha")
	ns := namespace(t, "ha", "enforce", nil, true)
	t.Cleanup(func() {
		// Leave the release as the other tests expect it, whatever happened here.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := pg.Upgrade(ctx, map[string]any{"replicaCount": 2}); err != nil {
			t.Errorf("restore the release: %v", err)
		}
		if err := pg.WaitAvailable(ctx); err != nil {
			t.Error(err)
		}
	})

	load := startLoad(t, ns, regs.RemoteRef("e2e/ha:v1"))
	load.waitFor(t, 30)

	// 1. A replica dies.
	victim := webhookPods(t)[0]
	if err := env.Client.CoreV1().Pods(pg.Namespace).Delete(ctx, victim, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err := e2e.Poll(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
		pods := webhookPods(t)
		return len(pods) == 2 && pods[0] != victim && pods[1] != victim, nil
	})
	if err != nil {
		t.Fatalf("replica %s not replaced: %v", victim, err)
	}
	if err := pg.WaitAvailable(ctx); err != nil {
		t.Fatal(err)
	}
	load.waitFor(t, 30)
	afterDelete := load.created.Load()

	// 2. A rolling update, as a helm upgrade with a changed value.
	if err := pg.Upgrade(ctx, map[string]any{"podAnnotations": map[string]any{"e2e.pullgate.dev/rollout": "1"}}); err != nil {
		t.Fatal(err)
	}
	if err := pg.WaitAvailable(ctx); err != nil {
		t.Fatal(err)
	}
	load.waitFor(t, 30)
	created, failures := load.stop()
	t.Logf("pods created under load: %d (%d before the rollout), failed: %d", created, afterDelete, len(failures))
	if len(failures) > 0 {
		t.Errorf("%d pod creations failed, want 0; first: %s", len(failures), failures[0])
	}
	pods, err := env.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := regs.MirrorRef("e2e/ha:v1@" + digest)
	unmutated := 0
	for _, p := range pods.Items {
		if p.Spec.Containers[0].Image != want {
			unmutated++
		}
	}
	// A creation cut short by stop() may have been stored all the same.
	if len(pods.Items) < int(created) || unmutated != 0 {
		t.Errorf("stored %d pods (created %d), %d not mutated to %s", len(pods.Items), created, unmutated, want)
	}

	// 3. Both replicas stopped: Fail rejects opted-in pods; kube-system is never sent.
	scale(t, 0)
	if err := e2e.Poll(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
		pods, err := env.Client.CoreV1().Pods(pg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: webhookSelector})
		return err == nil && len(pods.Items) == 0, err
	}); err != nil {
		t.Fatal(err)
	}
	_, err = env.Client.CoreV1().Pods(ns).Create(ctx, e2e.BusyboxPod("rejected", "true", regs.RemoteRef("e2e/ha:v1")), metav1.CreateOptions{})
	if err == nil || !strings.Contains(err.Error(), "failed calling webhook") {
		t.Errorf("with no replica, creating an opted-in pod gave %v, want the API server's webhook failure", err)
	}
	sys := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-ha-"},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64),
			Containers:                    []corev1.Container{{Name: "pause", Image: env.Node.Images.Pause}},
		},
	}
	sysPod, err := env.Client.CoreV1().Pods(metav1.NamespaceSystem).Create(ctx, sys, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kube-system pod with pullgate down: %v", err)
	}
	t.Cleanup(func() {
		_ = env.Client.CoreV1().Pods(metav1.NamespaceSystem).Delete(context.Background(), sysPod.Name, metav1.DeleteOptions{})
	})
	if _, err := env.WaitPod(ctx, metav1.NamespaceSystem, sysPod.Name, 60*time.Second, e2e.PodStarted); err != nil {
		t.Errorf("kube-system pod did not start with pullgate down: %v", err)
	}
}

func scale(t *testing.T, replicas int32) {
	t.Helper()
	_, err := env.Client.AppsV1().Deployments(pg.Namespace).UpdateScale(t.Context(), pg.Name, &autoscalingv1.Scale{
		ObjectMeta: metav1.ObjectMeta{Name: pg.Name, Namespace: pg.Namespace},
		Spec:       autoscalingv1.ScaleSpec{Replicas: replicas},
	}, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

const webhookSelector = "app.kubernetes.io/name=pullgate"

// webhookPods are the names of pullgate's pods that are not being deleted.
func webhookPods(t *testing.T) []string {
	t.Helper()
	pods, err := env.Client.CoreV1().Pods(pg.Namespace).List(t.Context(), metav1.ListOptions{LabelSelector: webhookSelector})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			names = append(names, p.Name)
		}
	}
	return names
}

// load creates pods in a namespace from a few workers until stopped. The pods select no node:
// admission is what is under test, not the node.
type load struct {
	created  atomic.Int64
	mu       sync.Mutex
	failures []string
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

func startLoad(t *testing.T, ns, image string) *load {
	ctx, cancel := context.WithCancel(t.Context())
	l := &load{cancel: cancel}
	const workers = 4
	for w := 0; w < workers; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			// Each worker paces itself to about 10 pods a second.
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				p := &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{GenerateName: "load-"},
					Spec: corev1.PodSpec{
						NodeSelector: map[string]string{"e2e.pullgate.dev/no-such-node": "true"},
						Containers:   []corev1.Container{{Name: "c", Image: image}},
					},
				}
				_, err := env.Client.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
				switch {
				case err == nil:
					l.created.Add(1)
				case ctx.Err() != nil:
					return
				default:
					l.mu.Lock()
					l.failures = append(l.failures, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
					l.mu.Unlock()
				}
			}
		}()
	}
	t.Cleanup(func() { l.stop() })
	return l
}

// waitFor waits until n more pods were created than when it was called.
func (l *load) waitFor(t *testing.T, n int64) {
	t.Helper()
	from := l.created.Load()
	if err := e2e.Poll(t.Context(), time.Minute, func(context.Context) (bool, error) {
		return l.created.Load() >= from+n, nil
	}); err != nil {
		t.Fatalf("load stalled at %d pods: %v", l.created.Load(), err)
	}
}

func (l *load) stop() (int64, []string) {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.created.Load(), l.failures
}
