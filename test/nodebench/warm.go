package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/pullgate/pullgate/test/e2e"
)

// Row (f): the autoscaler case. A pod asks for a new image and matches no node; then its node
// "appears" (a label is applied). Measured: label applied -> pod Running, with the mirror warmed
// by pullgate while the pod waited, and without (the label applied at once, so the node pulls
// through a cold mirror), for two new images of the same size and shape.
const (
	warmNodeLabel = "pullgate.dev/bench-node"
	warmedRepo    = "bench/warmed:v1"
	unwarmedRepo  = "bench/unwarmed:v1"
)

// warmValues turns mirror warming on in the bench install.
func warmValues(v map[string]any) map[string]any {
	v["policy"].(map[string]any)["warm"] = map[string]any{"enabled": true}
	return v
}

// warmRows measures row (f), not warmed then warmed.
func (b *bed) warmRows(ctx context.Context, ns string, layers []int64) ([]row, error) {
	var rows []row
	for i, c := range []struct {
		name, repo string
		warm       bool
	}{
		{"(f) node ready -> Running, mirror not warmed", unwarmedRepo, false},
		{"(f) node ready -> Running, mirror warmed by pullgate", warmedRepo, true},
	} {
		r, err := b.nodeReady(ctx, c.name, ns, c.repo, uint64(201+i), layers, c.warm)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.name, err)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func (b *bed) nodeReady(ctx context.Context, name, ns, repo string, seed uint64, layers []int64, warm bool) (row, error) {
	env, regs := b.env, b.env.Node.Registries
	r := row{name: name}
	img, err := e2e.BuildImage(e2e.ImageSpec{Busybox: env.Opts.Busybox, RandomLayers: layers, Seed: seed, LayerDir: b.o.layerDir, Cmd: []string{"sh"}})
	if err != nil {
		return r, err
	}
	if _, err := regs.Push(ctx, repo, e2e.Index(img)); err != nil {
		return r, err
	}
	fmt.Fprintf(os.Stderr, "nodebench: %s\n", name)
	value := strings.NewReplacer("/", "-", ":", "-").Replace(repo)
	pod := e2e.BusyboxPod("", "sleep 3600", regs.RemoteRef(repo))
	pod.GenerateName = "bench-"
	pod.Spec.NodeSelector = map[string]string{warmNodeLabel: value}
	pods := env.Client.CoreV1().Pods(ns)
	created, err := pods.Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return r, err
	}
	if warm {
		began := time.Now()
		err := e2e.Poll(ctx, 30*time.Minute, func(ctx context.Context) (bool, error) {
			if m := env.EventMessages(ctx, ns, created.Name, "MirrorWarmFailed"); len(m) > 0 {
				return false, fmt.Errorf("warm failed: %v", m)
			}
			return len(env.EventMessages(ctx, ns, created.Name, "MirrorWarmed")) > 0, nil
		})
		if err != nil {
			return r, err
		}
		fmt.Fprintf(os.Stderr, "nodebench: (f) warmed %s after %s: %v\n", repo, time.Since(began).Round(time.Millisecond), env.EventMessages(ctx, ns, created.Name, "MirrorWarmed"))
	}
	// What the upstream and the mirror send from here on is the node's pull: a warm, if any,
	// happened before the node was ready.
	before, err := b.traffic()
	if err != nil {
		return r, err
	}
	if err := labelNode(ctx, env, value); err != nil {
		return r, err
	}
	defer func() { _ = labelNode(context.WithoutCancel(ctx), env, "") }()
	ready := time.Now()
	if _, err := env.WaitPod(ctx, ns, created.Name, 30*time.Minute, e2e.PodStarted); err != nil {
		return r, err
	}
	r.start = time.Since(ready)
	for _, m := range env.EventMessages(ctx, ns, created.Name, "Pulled") {
		if s := pulledIn.FindStringSubmatch(m); s != nil {
			r.pulled = s[1]
		}
	}
	if err := b.since(&r, before); err != nil {
		return r, err
	}
	grace := int64(1)
	return r, pods.Delete(ctx, created.Name, metav1.DeleteOptions{GracePeriodSeconds: &grace})
}

// labelNode sets warmNodeLabel on the node, or removes it for "".
func labelNode(ctx context.Context, env *e2e.Env, value string) error {
	var v any = value
	if value == "" {
		v = nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{warmNodeLabel: v}}})
	if err != nil {
		return err
	}
	_, err = env.Client.CoreV1().Nodes().Patch(ctx, env.Node.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// warmTarget prints row (f)'s comparison: warmed should be at warm-mirror speed, like (c).
func warmTarget(out io.Writer, rows []row, judge func(bool) string) {
	var cold, warm *row
	for i := range rows {
		switch {
		case strings.HasPrefix(rows[i].name, "(f)") && strings.Contains(rows[i].name, "not warmed"):
			cold = &rows[i]
		case strings.HasPrefix(rows[i].name, "(f)"):
			warm = &rows[i]
		}
	}
	if cold == nil || warm == nil {
		return
	}
	fmt.Fprintf(out, "(f) node ready -> Running, warmed vs not\t%.1fx faster (%.2fs vs %.2fs), upstream during the pull %s\t>= 8x\t%s\n",
		cold.start.Seconds()/warm.start.Seconds(), warm.start.Seconds(), cold.start.Seconds(), human(warm.upstream), judge(cold.start.Seconds()/warm.start.Seconds() >= 8 && warm.mirrorFetches == 0))
}
