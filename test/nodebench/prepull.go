package main

import (
	"context"
	"fmt"
	"os"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullgate/pullgate/test/e2e"
)

// Row (e): a big image pre-pulled by a pullgate prepull group before any pod asks for it.
const (
	prepullRepo  = "bench/prepulled:v1"
	prepullGroup = "bench"
	prepullDS    = "pullgate-prepull-" + prepullGroup
)

// prepullValues are the chart values of the bench install: the node policy plus the controller
// and one group pre-pulling prepullRepo (pushed later; until then the group retries).
func prepullValues(env *e2e.Env) map[string]any {
	pol := env.NodePolicy()
	pol["prepull"] = []any{map[string]any{"name": prepullGroup, "images": []any{env.Node.Registries.RemoteRef(prepullRepo)}}}
	return map[string]any{"policy": pol, "controller": map[string]any{"enabled": true}}
}

// prepull pushes a new big image (other layers than bigRepo's, so nothing of it is on the node
// or the mirror) and waits until the group's DaemonSet has it running on the node.
func (b *bed) prepull(ctx context.Context, layers []int64) error {
	env := b.env
	img, err := e2e.BuildImage(e2e.ImageSpec{Busybox: env.Opts.Busybox, RandomLayers: layers, Seed: 101, LayerDir: b.o.layerDir, Cmd: []string{"sh"}})
	if err != nil {
		return err
	}
	digest, err := env.Node.Registries.Push(ctx, prepullRepo, e2e.Index(img))
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "nodebench: (e) waiting for the prepull group to pull %s\n", prepullRepo)
	began := time.Now()
	want := env.Node.Registries.MirrorRef(prepullRepo + "@" + digest)
	err = e2e.Poll(ctx, 30*time.Minute, func(ctx context.Context) (bool, error) {
		ds, err := env.Client.AppsV1().DaemonSets("pullgate-system").Get(ctx, prepullDS, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil // the controller has not created it yet
		}
		if err != nil {
			return false, err
		}
		return ds.Spec.Template.Spec.Containers[0].Image == want && ds.Status.NumberReady == 1 && ds.Status.UpdatedNumberScheduled == 1, nil
	})
	if err != nil {
		return fmt.Errorf("(e) the prepull DaemonSet did not get %s ready: %w", want, err)
	}
	fmt.Fprintf(os.Stderr, "nodebench: (e) pre-pulled in %s\n", time.Since(began).Round(time.Millisecond))
	return nil
}
