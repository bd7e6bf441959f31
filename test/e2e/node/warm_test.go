//go:build e2e

package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/pullgate/pullgate/test/e2e"
)

// warmValues turns mirror warming on in the suite's install. Pods that a node takes at once are
// left to that node (the queue's settle time), so the other tests' upstream counts stay as they
// were. Failed warms are retried after 2s, 4s, 8s instead of 30s, 60s, 120s, so TestWarmFaults
// sees every attempt in seconds.
func warmValues(v map[string]any) map[string]any {
	v["policy"].(map[string]any)["warm"] = map[string]any{"enabled": true}
	v["controller"].(map[string]any)["extraArgs"] = []any{"--warm-retry-backoff=" + warmBackoff.String()}
	return v
}

// warmBackoff is the suite's pause before a failed warm's first retry.
const warmBackoff = 2 * time.Second

// TestWarmAutoscaledNode is the autoscaler case: five pods ask for a new digest (admitted by the
// two webhook replicas) and match no node. The controller warms the mirror at admission; the
// upstream serves each blob exactly once; then the node appears (its label is applied) and the
// pods' pulls run at warm-mirror speed, with no further upstream request.
func TestWarmAutoscaledNode(t *testing.T) {
	ctx := t.Context()
	regs := env.Node.Registries
	const repo = "e2e/warm-app"
	img, err := e2e.BuildImage(e2e.ImageSpec{
		Busybox:      env.Opts.Busybox,
		Files:        map[string]e2e.File{"hello": {Data: []byte("hello from warm"), Mode: 0o644}},
		Cmd:          []string{"sh"},
		RandomLayers: []int64{16 << 20, 16 << 20, 16 << 20},
		Seed:         uint64(time.Now().UnixNano()),
		LayerDir:     t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	digest, err := regs.Push(ctx, repo+":v1", e2e.Index(img))
	if err != nil {
		t.Fatal(err)
	}
	var blobs []string
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	blobs = append(blobs, "/v2/"+repo+"/blobs/"+m.Config.Digest.String())
	var size int64
	for _, l := range m.Layers {
		blobs = append(blobs, "/v2/"+repo+"/blobs/"+l.Digest.String())
		size += l.Size
	}

	ns := namespace(t, "warm", "enforce", nil, true)
	label := "pullgate.dev/e2e-warm"
	before := regs.MirrorRequests.Snapshot()
	created := time.Now()
	var names []string
	for i := range 5 {
		pod := e2e.BusyboxPod(fmt.Sprintf("app-%d", i), "cat /hello; sleep 3600", regs.RemoteRef(repo+":v1"))
		pod.Spec.NodeSelector = map[string]string{label: ns}
		if _, err := env.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		names = append(names, pod.Name)
	}
	got, err := env.Client.CoreV1().Pods(ns).Get(ctx, names[0], metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := regs.MirrorRef(repo + ":v1@" + digest); got.Spec.Containers[0].Image != want {
		t.Fatalf("image %q, want %q", got.Spec.Containers[0].Image, want)
	}

	// Warming starts at admission; its Event lands on one of the pods.
	var warmed []string
	err = e2e.Poll(ctx, 3*time.Minute, func(ctx context.Context) (bool, error) {
		for _, n := range names {
			if msgs := env.EventMessages(ctx, ns, n, "MirrorWarmed"); len(msgs) > 0 {
				warmed = msgs
				return true, nil
			}
			if msgs := env.EventMessages(ctx, ns, n, "MirrorWarmFailed"); len(msgs) > 0 {
				return false, fmt.Errorf("warm failed: %v", msgs)
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	warmTook := time.Since(created)
	t.Logf("%s after the pods were created: %v", warmTook.Round(100*time.Millisecond), warmed)
	if !strings.Contains(warmed[0], "mirror warmed "+regs.MirrorRef(repo+":v1@"+digest)) {
		t.Errorf("Event %q", warmed[0])
	}
	checkOnce := func(when string) {
		t.Helper()
		after := regs.MirrorRequests.Snapshot()
		for _, b := range blobs {
			if n := after.Blobs[b] - before.Blobs[b]; n != 1 {
				t.Errorf("%s: the upstream served %s %d times, want exactly once", when, b, n)
			}
		}
	}
	checkOnce("after the warm")
	for _, n := range names {
		p, err := env.Client.CoreV1().Pods(ns).Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p.Spec.NodeName != "" {
			t.Fatalf("pod %s is on node %s before the node was labelled", n, p.Spec.NodeName)
		}
	}

	// The node "appears": labelled, the pods are scheduled and pull from the warm mirror.
	setLabel(t, label, ns)
	t.Cleanup(func() { setLabel(t, label, "") })
	ready := time.Now()
	for _, n := range names {
		if _, err := env.WaitPod(ctx, ns, n, 5*time.Minute, e2e.PodStarted); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("node labelled -> 5 pods Running: %s (image %.1f MiB, warmed in %s)", time.Since(ready).Round(100*time.Millisecond), float64(size)/(1<<20), warmTook.Round(100*time.Millisecond))
	checkOnce("after the pods ran")
}

// setLabel sets (or, with value "", removes) a label on the suite's node.
func setLabel(t *testing.T, key, value string) {
	t.Helper()
	var v any = value
	if value == "" {
		v = nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{key: v}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := env.Client.CoreV1().Nodes().Patch(ctx, env.Node.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}
