package main

import (
	"context"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/pullgate/pullgate/pkg/prepull"
)

// addTaints registers, with --startup-taints, the controller that removes the groups' startup
// taints from nodes. It returns what to call when the policy changes: queue every node, or,
// without the flag, say that groups with a startupTaint will not see it removed.
func addTaints(mgr ctrl.Manager, o controllerOptions, store *policyStore, rec *prepull.Reconciler, s prepull.Settings, logger logr.Logger) (func(context.Context), error) {
	if !o.startupTaints {
		return func(context.Context) {
			pol := store.Current()
			if pol == nil {
				return
			}
			for _, g := range pol.Policy().Prepull {
				if g.StartupTaint != nil {
					logger.Info("A group sets startupTaint, but the controller runs without --startup-taints (the chart sets it, with the node RBAC, when a group has one): nodes keep the taint",
						"group", g.Name, "taint", g.StartupTaint.Key)
				}
			}
		}, nil
	}
	t := &prepull.Taints{Client: mgr.GetClient(), Policy: store, Settings: s, Events: rec.Events, Problems: rec}
	if err := t.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	return t.PolicyChanged, nil
}
