package mutate

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pullgate/pullgate/internal/kjson"
	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/policy"
)

var _ admission.Handler = (*Handler)(nil)

// PolicySource hands out the policy in force; reloading swaps what it returns.
type PolicySource interface {
	Current() *policy.Compiled
}

// NamespaceMeta is what the policy reads of a namespace: its labels, for rules and the mode
// (the opt-in), and its annotations, for the overrides tenantOverrides allows.
type NamespaceMeta struct {
	Labels      map[string]string
	Annotations map[string]string
}

// NamespaceReader returns a namespace's labels and annotations, from a cache: it is asked on
// every admission.
type NamespaceReader interface {
	Namespace(ctx context.Context, name string) (NamespaceMeta, error)
}

// Recorder reports, as Kubernetes Events, what audit mode would have changed in a pod.
type Recorder interface {
	WouldChange(namespace, pod string, changes []Change)
}

// Handler is the admission.Handler for pods.
type Handler struct {
	Policy PolicySource
	// Resolver pins tags; nil means no resolution (every pin fails per onError).
	Resolver contract.Resolver
	// Namespaces may be nil when no API server is reachable; the policy's mode then applies.
	Namespaces NamespaceReader
	// OwnNamespace is never mutated, so pullgate can always be rescheduled.
	OwnNamespace string
	// Events, if set, receives audit mode's would-be changes (never for dry runs).
	Events Recorder
	// Secrets, if set, is asked whether the pull secrets a pod gets exist in its namespace.
	Secrets SecretChecker
	// Platforms, if set, lists the platforms of digests about to be pinned (policy platforms).
	Platforms contract.PlatformLister
	// NodePlatforms, if set, gives the nodes' platforms (platforms.fromNodes).
	NodePlatforms NodePlatforms

	// decisions remembers what the policy says of each image text; NewHandler sets it.
	memo *decisionMemo
}

// NewHandler returns a handler. Its counters count whether or not RegisterMetrics exposed them.
func NewHandler(h Handler) *Handler {
	h.memo = &decisionMemo{}
	return &h
}

var podResource = struct{ group, version, resource string }{"", "v1", "pods"}

// Handle answers one pod admission. It only ever denies for malformed requests or when the
// policy says onError: Deny; every other failure admits the pod with a warning.
func (h *Handler) Handle(ctx context.Context, req admission.Request) admission.Response {
	logger := log.FromContext(ctx)
	if r := req.Resource; r.Group != podResource.group || r.Version != podResource.version || r.Resource != podResource.resource {
		return h.skip("not-pod", fmt.Sprintf("%s is not handled", r.String()))
	}
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return h.skip("operation", fmt.Sprintf("operation %s is not handled", req.Operation))
	}
	if req.SubResource != "" && req.SubResource != "ephemeralcontainers" {
		return h.skip("subresource", fmt.Sprintf("subresource %s is not handled", req.SubResource))
	}
	pol := h.Policy.Current()
	if pol == nil {
		return admission.Allowed("no policy loaded").WithWarnings("pullgate has no policy loaded; pod admitted unchanged")
	}
	var warnings []string
	var ns NamespaceMeta
	if h.Namespaces != nil {
		var err error
		if ns, err = h.Namespaces.Namespace(ctx, req.Namespace); err != nil {
			logger.Error(err, "Reading namespace labels; using the policy's mode", "namespace", req.Namespace)
			warnings = append(warnings, fmt.Sprintf("pullgate could not read the labels of namespace %s; applied the policy's default mode", req.Namespace))
		}
	}
	plan, err := newPlan(pol, Input{
		Operation:            req.Operation,
		SubResource:          req.SubResource,
		Namespace:            req.Namespace,
		NamespaceLabels:      ns.Labels,
		NamespaceAnnotations: ns.Annotations,
		OwnNamespace:         h.OwnNamespace,
		Object:               req.Object.Raw,
		OldObject:            req.OldObject.Raw,
		DecodedObject:        decoded(req.Object),
		DecodedOldObject:     decoded(req.OldObject),
	}, h.memo.For(pol))
	if err != nil {
		if errors.Is(err, ErrBadRequest) {
			return admission.Errored(http.StatusBadRequest, err)
		}
		return admission.Errored(http.StatusInternalServerError, err)
	}
	dryRun := req.DryRun != nil && *req.DryRun
	if plan.Skip != "" {
		logger.V(1).Info("Skipped", "reason", plan.Skip)
		if !dryRun {
			countOverrides(plan.Overrides) // an opt-out the namespace allowed is one
		}
		return h.skip(plan.Skip, plan.Skip)
	}
	outcomes := h.resolveAll(ctx, plan.Requests(), pol.ResolveTimeout())
	warnings = append(warnings, h.checkPlatforms(ctx, pol, plan, outcomes, dryRun)...)
	res := plan.Apply(outcomes)
	res.Warnings = append(warnings, res.Warnings...)
	res.Warnings = append(res.Warnings, h.secretWarnings(ctx, req.Namespace, plan, dryRun)...)
	h.record(req.Namespace, plan, res, dryRun)
	logger.V(1).Info("Decided", "mode", plan.Mode, "rule", plan.Rule, "changes", len(res.Changes), "warnings", len(res.Warnings), "denied", res.Deny != "", "dryRun", dryRun)

	if res.Deny != "" {
		resp := admission.Denied(res.Deny).WithWarnings(res.Warnings...)
		resp.AuditAnnotations = res.AuditAnnotations
		return resp
	}
	resp := admission.Allowed(modeText(plan.Mode)).WithWarnings(res.Warnings...)
	resp.AuditAnnotations = res.AuditAnnotations
	if len(res.Patch) > 0 {
		// Encoded here rather than left to Response.Complete, which marshals by reflection.
		patch, err := kjson.EncodePatch(res.Patch)
		if err != nil {
			return admission.Errored(http.StatusInternalServerError, fmt.Errorf("encoding the patch: %w", err))
		}
		resp.Patch, resp.PatchType = patch, new(admissionv1.PatchTypeJSONPatch)
	}
	return resp
}

// decoded is the object the caller decoded along with the review, if it did.
func decoded(ext runtime.RawExtension) *DecodedObject {
	d, _ := ext.Object.(*DecodedObject)
	return d
}

func (h *Handler) skip(reason, message string) admission.Response {
	skippedTotal.WithLabelValues(reason).Inc()
	return admission.Allowed(message)
}

// record counts changes. A dry run is answered in full but leaves no trace.
func (h *Handler) record(namespace string, plan *Plan, res Result, dryRun bool) {
	if dryRun {
		return
	}
	if h.Events != nil && plan.Mode == policy.ModeAudit && len(res.Changes) > 0 {
		h.Events.WouldChange(namespace, plan.Pod, res.Changes)
	}
	countOverrides(plan.Overrides)
	mode := modeText(plan.Mode)
	for _, c := range res.Changes {
		mutationsTotal.WithLabelValues(c.Action, mode).Inc()
	}
	unpinnedTotal.WithLabelValues(string(plan.OnError)).Add(float64(res.Unpinned))
}

// resolveAll resolves the requests concurrently (at most maxConcurrentResolves at a time) under
// one budget, so a pod's admission costs the slowest registry answer, not the sum. It returns when all have answered or the budget is
// spent, whichever comes first; a late answer is dropped rather than waited for.
func (h *Handler) resolveAll(ctx context.Context, reqs []contract.ResolveRequest, budget time.Duration) map[string]contract.Outcome {
	if len(reqs) == 0 {
		return nil
	}
	out := make(map[string]contract.Outcome, len(reqs))
	if h.Resolver == nil {
		for _, r := range reqs {
			out[r.Ref.String()] = contract.Outcome{Err: errors.New("no resolver configured")}
		}
		return out
	}
	if c, ok := h.Resolver.(contract.CachedResolver); ok {
		var rest []contract.ResolveRequest
		for _, r := range reqs {
			if o, ok := c.Cached(r); ok {
				out[r.Ref.String()] = o
			} else {
				rest = append(rest, r)
			}
		}
		if len(rest) == 0 {
			return out
		}
		reqs = rest
	}
	// The resolver's deadline falls a little before ours, so that an answer it produces because
	// its deadline passed (a stale digest from the cache) arrives while we still wait for it.
	wait, cancelWait := context.WithTimeout(ctx, budget)
	defer cancelWait()
	ctx, cancel := context.WithTimeout(wait, budget-resolveMargin(budget))
	defer cancel()
	type answer struct {
		key string
		o   contract.Outcome
	}
	answers := make(chan answer, len(reqs)) // buffered: late senders never block
	// A few workers, in pod order, rather than one goroutine per reference: a pod author who
	// writes a thousand distinct tags must not turn one admission into a thousand registry
	// connections at once, starving every other admission of CPU and the pod's own real images
	// of their turn. Once the deadline passes, what is still queued costs a cache lookup each.
	work := make(chan contract.ResolveRequest, len(reqs))
	for _, r := range reqs {
		work <- r
	}
	close(work)
	for range min(len(reqs), maxConcurrentResolves) {
		go func() {
			for r := range work {
				res, err := h.Resolver.Resolve(ctx, r)
				answers <- answer{r.Ref.String(), contract.Outcome{Resolution: res, Err: err}}
			}
		}()
	}
	for range reqs {
		select {
		case a := <-answers:
			out[a.key] = a.o
		case <-wait.Done():
			// A registry that hangs must not un-pin a digest the cache may still serve, even
			// when the resolver's own stale answer is late (a loaded machine).
			stale, _ := h.Resolver.(contract.StaleResolver)
			for _, r := range reqs {
				key := r.Ref.String()
				if _, ok := out[key]; ok {
					continue
				}
				if stale != nil {
					if res, ok := stale.Stale(r); ok {
						out[key] = contract.Outcome{Resolution: res}
						continue
					}
				}
				out[key] = contract.Outcome{Err: fmt.Errorf("no answer within the %s resolve budget", budget)}
			}
			return out
		}
	}
	return out
}

// maxConcurrentResolves bounds the registry lookups one admission runs at once. Real pods have
// a handful of distinct images, which all still start at once.
const maxConcurrentResolves = 16

// resolveMargin is a tenth of the budget, at most 100ms.
func resolveMargin(budget time.Duration) time.Duration {
	return min(budget/10, 100*time.Millisecond)
}

// StaticPolicy is a PolicySource that never changes, for the offline mutate command and tests.
type StaticPolicy struct{ Policy *policy.Compiled }

// Current returns the policy.
func (s StaticPolicy) Current() *policy.Compiled { return s.Policy }

// StaticNamespace is a NamespaceReader with fixed labels and annotations, for the offline
// mutate command.
type StaticNamespace NamespaceMeta

// Namespace returns the same labels and annotations for every namespace.
func (s StaticNamespace) Namespace(context.Context, string) (NamespaceMeta, error) {
	return NamespaceMeta(s), nil
}
