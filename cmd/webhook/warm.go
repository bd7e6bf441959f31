package main

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/pullgate/pullgate/pkg/resolve"
	"github.com/pullgate/pullgate/pkg/warm"
)

// addWarm adds mirror warming to the controller's manager: on the leader only (one warm per
// digest in the cluster, however many webhook replicas admitted it), and idle until the policy
// warms a mirror. It reads through res, the resolver the policy configures, so warming uses
// the mirrors' credentials, CA bundles and circuit breakers.
func addWarm(mgr manager.Manager, kube kubernetes.Interface, res *resolve.Resolver, store *policyStore, backoff time.Duration) error {
	if err := warm.RegisterMetrics(metrics.Registry); err != nil {
		return err
	}
	w := &warm.Watcher{Client: kube, Queue: &warm.Queue{
		Warmer:  res,
		Policy:  store,
		Events:  mgr.GetEventRecorder("pullgate-warm"),
		Backoff: backoff,
	}}
	// A RunnableFunc needs the leader election: it starts once this replica leads.
	return mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		return w.Run(logr.NewContext(ctx, mgr.GetLogger()))
	}))
}
