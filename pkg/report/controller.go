package report

import (
	"context"
	"errors"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/policy"
)

// PolicySource hands out the policy in force.
type PolicySource interface {
	Current() *policy.Compiled
}

// Controller scans the cluster's pods on a schedule and soon after they change, and writes the
// reports. It runs on the leader only.
type Controller struct {
	Kube     kubernetes.Interface
	Writer   *Writer
	Policy   PolicySource
	Resolver contract.Resolver
	// Interval is the schedule; a change is scanned after Settle, and at most once per Settle.
	Interval time.Duration
	Settle   time.Duration
	Options  Options
	// Inspector runs admission's checks on the scan (missing pull secrets, platforms); its
	// Timeout defaults to the policy's resolve timeout.
	Inspector Inspector
	Log       logr.Logger
	// Scanned, if set, is called after each scan (tests and the benchmark).
	Scanned func(Stats, *Findings, time.Duration, error)
}

var (
	_ manager.Runnable               = (*Controller)(nil)
	_ manager.LeaderElectionRunnable = (*Controller)(nil)
)

// NeedLeaderElection is true: two replicas must not write the same reports.
func (c *Controller) NeedLeaderElection() bool { return true }

// Start runs until ctx ends. A failing scan (report API missing, RBAC denied) is logged and
// retried on the schedule; it never stops the controller.
func (c *Controller) Start(ctx context.Context) error {
	f := informers.NewSharedInformerFactory(c.Kube, 0)
	pods := f.Core().V1().Pods()
	if err := pods.Informer().SetTransform(Slim); err != nil {
		return err
	}
	nss := f.Core().V1().Namespaces()
	changed := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	h := cache.ResourceEventHandlerFuncs{AddFunc: poke, UpdateFunc: func(_, n any) { poke(n) }, DeleteFunc: poke}
	if _, err := pods.Informer().AddEventHandler(h); err != nil {
		return err
	}
	if _, err := nss.Informer().AddEventHandler(h); err != nil {
		return err
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), pods.Informer().HasSynced, nss.Informer().HasSynced) {
		return ctx.Err()
	}
	c.Log.Info("Reports starting", "interval", c.Interval.String())
	tick := time.NewTicker(c.Interval)
	defer tick.Stop()
	settle := max(c.Settle, time.Second)
	for {
		c.scan(ctx, pods.Lister().List, nss.Lister().List)
		// Drain the events the scan already saw, then wait for the next reason to scan.
		select {
		case <-changed:
		default:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-changed:
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(settle):
			}
		}
	}
}

func (c *Controller) scan(ctx context.Context, listPods func(labels.Selector) ([]*corev1.Pod, error), listNS func(labels.Selector) ([]*corev1.Namespace, error)) {
	start := time.Now()
	pol := c.Policy.Current()
	if pol == nil {
		return
	}
	pods, err := listPods(labels.Everything())
	if err != nil {
		c.Log.Error(err, "Listing pods")
		return
	}
	list, err := listNS(labels.Everything())
	if err != nil {
		c.Log.Error(err, "Listing namespaces")
		return
	}
	nss := make([]Namespace, len(list))
	for i, n := range list {
		nss[i] = Namespace{Name: n.Name, Labels: n.Labels, Annotations: n.Annotations}
	}
	s := Plan(pol, nss, pods, c.Options)
	outcomes := Resolve(ctx, c.Resolver, s.Requests(), 8, pol.ResolveTimeout(), nil)
	in := c.Inspector
	if in.Timeout == 0 {
		in.Timeout = pol.ResolveTimeout()
	}
	findings := s.FinishWith(outcomes, s.Inspect(ctx, outcomes, in))
	reports, cluster := Reports(findings, time.Now())
	st, err := c.Writer.Write(ctx, reports, cluster)
	switch {
	case errors.Is(err, ErrNoReportAPI):
		// Logged once by the writer.
	case err != nil:
		c.Log.Error(err, "Writing reports")
	default:
		c.Log.V(1).Info("Scanned", "pods", len(pods), "namespaces", len(findings.Namespaces), "written", st.Written, "unchanged", st.Unchanged, "deleted", st.Deleted, "took", time.Since(start).String())
	}
	if c.Scanned != nil {
		c.Scanned(st, findings, time.Since(start), err)
	}
}
