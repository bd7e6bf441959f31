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

// InjectedSecrets lists the pull secrets the policy gives the pod, whether it has them already
// or gets them now: those the kubelet will use for its mirror images.
func (p *Plan) InjectedSecrets() []string { return p.injected }

// MissingSecrets returns those of names that checker says do not exist in the namespace; a
// secret whose existence cannot be told counts as present, so pullgate never warns wrongly.
func MissingSecrets(ctx context.Context, checker SecretChecker, namespace string, names []string) []string {
	var missing []string
	for _, name := range names {
		if exists, known := checker.Exists(ctx, namespace, name); known && !exists {
			missing = append(missing, name)
		}
	}
	return missing
}

// MissingSecretMessage says what a missing pull secret costs, naming the mirrors the kubelet
// pulls from (hosts, from MirrorHosts).
func MissingSecretMessage(name, namespace string, hosts []string) string {
	if len(hosts) == 0 {
		return fmt.Sprintf("pull secret %s does not exist in namespace %s: the kubelet cannot use it", name, namespace)
	}
	return fmt.Sprintf("pull secret %s does not exist in namespace %s: the kubelet will fail to pull from %s with 401 Unauthorized", name, namespace, strings.Join(hosts, ", "))
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
	missing := MissingSecrets(ctx, h.Secrets, namespace, plan.secrets)
	if len(missing) == 0 {
		return nil
	}
	hosts := plan.MirrorHosts()
	warnings := make([]string, 0, len(missing))
	for _, name := range missing {
		if !dryRun {
			missingSecretsTotal.Inc()
		}
		log.FromContext(ctx).V(1).Info("Pull secret missing", "secret", name, "namespace", namespace)
		warnings = append(warnings, MissingSecretMessage(name, namespace, hosts))
	}
	return warnings
}
