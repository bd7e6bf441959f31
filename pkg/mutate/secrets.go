package mutate

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/pullgate/pullgate/pkg/policy"
)

// SecretChecker tells whether a Secret exists in a namespace. Implementations answer from a
// cache: it is asked on every admission that adds pull secrets.
type SecretChecker interface {
	// Exists reports whether the Secret exists; known is false when that could not be told
	// (no permission, API server slow), and pullgate then says nothing rather than guess.
	Exists(ctx context.Context, namespace, name string) (exists, known bool)
}

var missingSecretsTotal = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "pullgate_missing_pull_secrets_total",
	Help: "Pull secrets pullgate added to a pod although they do not exist in its namespace: the kubelet pulls from the mirror without credentials.",
})

// AddedSecrets lists the pull secrets the plan adds to the pod, in policy order.
func (p *Plan) AddedSecrets() []string { return p.secrets }

// MirrorHosts lists the mirror hosts the pod's images end up on, in pod order.
func (p *Plan) MirrorHosts() []string {
	var hosts []string
	for _, ip := range p.images {
		if ip.mirror != "" && !slices.Contains(hosts, ip.mirror) {
			hosts = append(hosts, ip.mirror)
		}
	}
	return hosts
}

// secretWarnings checks that each pull secret pullgate adds exists in the pod's namespace. A
// missing one is not pullgate's to create (the credentials are the namespace owner's, or
// syncCredentials' to copy), but the kubelet then pulls from an authenticated mirror without
// them and fails with 401, even for an image already on the node: the author learns it here,
// at admission, rather than from ErrImagePull.
func (h *Handler) secretWarnings(ctx context.Context, namespace string, plan *Plan, dryRun bool) []string {
	if h.Secrets == nil || plan.Mode != policy.ModeEnforce || len(plan.secrets) == 0 {
		return nil
	}
	var warnings []string
	var hosts []string
	for _, name := range plan.secrets {
		exists, known := h.Secrets.Exists(ctx, namespace, name)
		if exists || !known {
			continue
		}
		if !dryRun {
			missingSecretsTotal.Inc()
		}
		log.FromContext(ctx).V(1).Info("Pull secret missing", "secret", name, "namespace", namespace)
		if hosts == nil {
			hosts = plan.MirrorHosts()
		}
		if len(hosts) == 0 {
			warnings = append(warnings, fmt.Sprintf("pull secret %s does not exist in namespace %s: the kubelet cannot use it", name, namespace))
			continue
		}
		warnings = append(warnings, fmt.Sprintf("pull secret %s does not exist in namespace %s: the kubelet will fail to pull from %s with 401 Unauthorized", name, namespace, strings.Join(hosts, ", ")))
	}
	return warnings
}
