package main

import (
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/pullgate/pullgate/pkg/report"
	"github.com/pullgate/pullgate/pkg/resolve"
)

// addReports registers the report scanner with the manager, which runs it on the leader only.
// interval is --report-interval; a change is scanned after a sixtieth of it.
func addReports(mgr ctrl.Manager, cfg *rest.Config, kube kubernetes.Interface, store *policyStore, res *resolve.Resolver, namespace string, interval time.Duration, logger logr.Logger) error {
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
		Log:      log,
	})
}
