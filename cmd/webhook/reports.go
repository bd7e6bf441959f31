package main

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/report"
	"github.com/pullgate/pullgate/pkg/resolve"
)

// addReports registers the report scanner with the manager, which runs it on the leader only.
// interval is --report-interval; a change is scanned after a sixtieth of it.
func addReports(ctx context.Context, mgr ctrl.Manager, cfg *rest.Config, kube kubernetes.Interface, store *policyStore, res *resolve.Resolver, namespace string, interval time.Duration, logger logr.Logger) error {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("reports: %w", err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return fmt.Errorf("reports: %w", err)
	}
	log := logger.WithName("reports")
	return mgr.Add(&report.Controller{
		Kube:     kube,
		Writer:   &report.Writer{Dynamic: dyn, Discovery: disc, Log: log},
		Policy:   store,
		Resolver: res,
		Interval: interval,
		Settle:   interval / 60,
		Options:  report.Options{OwnNamespace: namespace},
		// The chart binds the controller to the webhook's ClusterRoles for these: get on the
		// injected pull secrets' names, and list/watch nodes with platforms.fromNodes.
		Inspector: inspector(ctx, kube, res),
		Log:       log,
	})
}

// inspector runs admission's own checks in a scan: the webhook's secret presence cache and
// node platforms (whose informer starts only when a policy asks for platforms.fromNodes).
func inspector(ctx context.Context, kube kubernetes.Interface, res contract.Resolver) report.Inspector {
	in := report.Inspector{Secrets: newSecretPresence(kube), Nodes: newNodePlatforms(ctx, kube)}
	if r, ok := res.(*resolve.Resolver); ok && r != nil {
		in.Platforms = resolve.NewPlatforms(r)
	}
	return in
}
