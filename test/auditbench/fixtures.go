package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/pullgate/pullgate/test/e2e"
)

// push pushes n small images to the upstream, bench/appNNN:v1.
func push(ctx context.Context, env *e2e.Env, n int) ([]string, error) {
	refs := make([]string, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range n {
		refs[i] = env.UpstreamRef(fmt.Sprintf("bench/app%03d:v1", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			img, err := random.Image(256, 1)
			if err == nil {
				var ref name.Reference
				if ref, err = name.ParseReference(refs[i], name.Insecure); err == nil {
					err = remote.Write(ref, img, remote.WithContext(ctx))
				}
			}
			if err != nil {
				errs <- fmt.Errorf("push %s: %w", refs[i], err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return refs, <-errs
}

// createPods creates pods of Deployments (10 pods each, ReplicaSet owners as a controller-manager
// would write them): half in bigNamespace (enforce), the rest spread over enforce, audit and
// unlabelled namespaces; the workloads cycle through the images.
func createPods(ctx context.Context, kube kubernetes.Interface, refs []string, pods, namespaces int) error {
	names := []string{bigNamespace}
	modes := []string{"enforce"}
	for i := 1; i < namespaces; i++ {
		names = append(names, fmt.Sprintf("bench-%02d", i))
		modes = append(modes, []string{"enforce", "audit", ""}[i%3])
	}
	for i, n := range names {
		labels := map[string]string{}
		if modes[i] != "" {
			labels[e2e.ModeLabel] = modes[i]
		}
		if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n, Labels: labels}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	type job struct{ ns, owner, image string }
	jobs := make(chan job)
	var failed atomic.Pointer[error]
	var done atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if err := createPod(ctx, kube, j.ns, j.owner, j.image, int(done.Add(1))); err != nil {
					failed.CompareAndSwap(nil, &err)
				}
			}
		}()
	}
	for i := 0; i < pods && ctx.Err() == nil; i++ {
		ns := bigNamespace
		if i%2 == 1 && namespaces > 1 {
			ns = names[1+(i/2)%(namespaces-1)]
		}
		w := i / podsPerOwner
		jobs <- job{ns, fmt.Sprintf("app%04d", w), refs[w%len(refs)]}
		if i > 0 && i%2000 == 0 {
			fmt.Fprintf(os.Stderr, "created %d pods\n", i)
		}
	}
	close(jobs)
	wg.Wait()
	if err := failed.Load(); err != nil {
		return *err
	}
	return ctx.Err()
}

func createPod(ctx context.Context, kube kubernetes.Interface, ns, owner, image string, n int) error {
	yes := true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:   fmt.Sprintf("%s-5d9f-%05d", owner, n),
			Labels: map[string]string{"app": owner, "pod-template-hash": "5d9f"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: owner + "-5d9f",
				UID: types.UID(fmt.Sprintf("00000000-0000-0000-0000-%012d", n)), Controller: &yes}},
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
	}
	_, err := kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	return err
}

func createOne(ctx context.Context, kube kubernetes.Interface, image string) error {
	return createPod(ctx, kube, "bench-01", "extra", image, 999999)
}
