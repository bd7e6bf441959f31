package main

import (
	"context"
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// ownLease makes the controller's Deployment the owner of its leader election Lease, once this
// replica leads: controller-runtime creates the Lease and never deletes it, so without an owner
// helm uninstall would leave it behind. The merge patch touches only ownerReferences; the
// elector reads the Lease before each renewal, so it keeps them. A failure is logged, not fatal:
// leading matters more than tidiness.
func ownLease(kube kubernetes.Interface, ns, name string, owner *metav1.OwnerReference) manager.Runnable {
	return manager.RunnableFunc(func(ctx context.Context) error {
		if owner == nil {
			return nil
		}
		l, err := kube.CoordinationV1().Leases(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			log.FromContext(ctx).Error(err, "Reading the leader election Lease to own it", "lease", name)
			return nil
		}
		for _, o := range l.OwnerReferences {
			if o.UID == owner.UID {
				return nil
			}
		}
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
			"ownerReferences": append(l.OwnerReferences, *owner),
		}})
		if err != nil {
			return err
		}
		if _, err := kube.CoordinationV1().Leases(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			log.FromContext(ctx).Error(err, "Making the controller Deployment own the leader election Lease; helm uninstall will leave it", "lease", name)
		}
		return nil
	})
}
