package main

import (
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/pullgate/pullgate/pkg/credsync"
)

// credentialSyncInterval bounds how long a rotated mirror credential takes to reach the copies;
// namespace changes (an opt-in, an opt-out) are synced within seconds.
const credentialSyncInterval = time.Minute

// addCredentialSync registers the credential copier with the manager, which runs it on the
// leader only.
func addCredentialSync(mgr ctrl.Manager, kube kubernetes.Interface, store *policyStore, namespace string, logger logr.Logger) error {
	if err := credsync.RegisterMetrics(metrics.Registry); err != nil {
		return err
	}
	return mgr.Add(&credsync.Syncer{Kube: kube, Policy: store, Namespace: namespace, Interval: credentialSyncInterval, Log: logger.WithName("credentials")})
}
