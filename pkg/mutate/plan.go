package mutate

import (
	"errors"
	"fmt"

	"github.com/go-json-experiment/json/jsontext"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/pullgate/pullgate/internal/kjson"
	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/policy"
)

// Annotations pullgate reads on pods.
const (
	// SkipAnnotation opts a pod out, honoured only when the policy sets allowPodOptOut or lets
	// the namespace allow it (tenantOverrides.podOptOut).
	SkipAnnotation = "pullgate.dev/skip"
	// mirrorPodAnnotation marks the API-server copy of a static pod; its spec cannot change.
	mirrorPodAnnotation = corev1.MirrorPodAnnotationKey
)

// Reasons a pod is admitted without looking at its images. They are metric label values.
const (
	SkipNamespaceExcluded = "namespace-excluded"
	SkipOwnNamespace      = "own-namespace"
	SkipMirrorPod         = "mirror-pod"
	SkipOptedOut          = "opted-out"
	SkipOwnerExcluded     = "owner-excluded"
	SkipPodExcluded       = "pod-excluded"
)

// Input is one admission as the core sees it: its objects raw, or decoded by the caller along
// with the review, never re-encoded.
type Input struct {
	Operation       admissionv1.Operation
	SubResource     string // "" or "ephemeralcontainers"
	Namespace       string
	NamespaceLabels map[string]string
	// NamespaceAnnotations are read for the overrides tenantOverrides allows.
	NamespaceAnnotations map[string]string
	// OwnNamespace is pullgate's namespace, always left alone so pullgate can always restart.
	OwnNamespace string
	Object       []byte
	OldObject    []byte
	// DecodedObject and DecodedOldObject, when set, stand for Object and OldObject: the caller
	// decoded them along with its review.
	DecodedObject    *DecodedObject
	DecodedOldObject *DecodedObject
}

// object returns the admitted pod, from its decoded form when the caller has it.
func (in Input) object() (*podView, error) {
	if in.DecodedObject != nil {
		return decodedPod(in.DecodedObject, "object")
	}
	return decodePod(in.Object, "object")
}

// oldObject returns the pod before an UPDATE.
func (in Input) oldObject() (*podView, error) {
	if in.DecodedOldObject != nil {
		return decodedPod(in.DecodedOldObject, "oldObject")
	}
	return decodePod(in.OldObject, "oldObject")
}

// ErrBadRequest marks input that is not a Pod admission pullgate can act on.
var ErrBadRequest = errors.New("bad admission request")

// Plan is what pullgate intends to do to one pod before any digest is known.
type Plan struct {
	Skip    string // non-empty: admit untouched, for this reason
	Pod     string // metadata.name, or generateName for pods named by the API server
	Mode    policy.Mode
	Rule    string
	OnError policy.OnError
	// Overrides are the namespace's override annotations and what became of each.
	Overrides []policy.Override
	// PreferredMirrors are the namespace's accepted mirror picks by canonical upstream
	// registry, for ordering each registry's mirror candidates (the pick first).
	PreferredMirrors map[string]policy.MirrorTarget

	images        []imagePlan
	secrets       []string // names to append
	injected      []string // names the pod has or gets from the policy
	createSecrets bool     // the pod has no imagePullSecrets yet: add the whole list
	warnings      []string
	problems      []Unpinnable // image fields left untouched because they cannot be read

	generation     string // the policy's, recorded in OriginalAnnotation
	hasMetadata    bool   // the pod has a metadata object to add annotations into
	hasAnnotations bool   // the pod has metadata.annotations, so the annotation is added into it
	prevOriginal   string // OriginalAnnotation already on the pod (a reinvocation)
}

// imagePlan is the decision for one image field.
type imagePlan struct {
	site
	ref       imageRef
	target    string // repository text the image ends up on: a mirror, or the author's own
	mirror    string // host of the mirror the image ends up on, if it does
	rewritten bool
	// alternates are the image on the registry's further mirrors, where it goes instead when
	// the resolver answers for one of them (failover). Shared with the memo.
	alternates []alternate
	request    *contract.ResolveRequest // nil when nothing needs resolving
	// pullPolicy is what to set once pinned; empty when the field may not change (UPDATE).
	pullPolicy corev1.PullPolicy
}

// NewPlan decodes a pod admission and decides every image field. Errors wrap ErrBadRequest.
func NewPlan(pol *policy.Compiled, in Input) (*Plan, error) {
	return newPlan(pol, in, nil)
}

// newPlan is NewPlan with the decisions already known for pol, which may be nil.
func newPlan(pol *policy.Compiled, in Input, known *policyDecisions) (*Plan, error) {
	pod, err := in.object()
	if err != nil {
		return nil, err
	}
	d := pol.Decide(in.Namespace, in.NamespaceLabels, in.NamespaceAnnotations)
	switch {
	case in.OwnNamespace != "" && in.Namespace == in.OwnNamespace:
		return &Plan{Skip: SkipOwnNamespace}, nil
	case pod.Metadata.Annotations[mirrorPodAnnotation] != "":
		return &Plan{Skip: SkipMirrorPod}, nil
	// Asked apart: an excluded namespace's decision is empty, and opt-out comes first.
	case (pol.AllowPodOptOut() || d.PodOptOut) && pod.Metadata.Annotations[SkipAnnotation] == "true":
		return &Plan{Skip: SkipOptedOut, Overrides: d.Overrides}, nil
	case d.Excluded:
		return &Plan{Skip: SkipNamespaceExcluded}, nil
	}
	if skip, err := excludedPod(pol, pod); err != nil {
		return nil, err
	} else if skip != "" {
		return &Plan{Skip: skip}, nil
	}
	p := &Plan{Pod: pod.Metadata.Name, Mode: d.Mode, Rule: d.Rule, OnError: pol.OnError(), generation: pol.Generation()}
	p.Overrides, p.PreferredMirrors, p.warnings = d.Overrides, d.PreferredMirrors, overrideWarnings(in.Namespace, d.Overrides)
	p.hasMetadata, p.hasAnnotations = pod.Metadata.present, pod.Metadata.Annotations != nil
	p.prevOriginal = pod.Metadata.Annotations[OriginalAnnotation]
	if p.Pod == "" {
		p.Pod = pod.Metadata.GenerateName
	}

	candidates, setPolicy, err := changeable(in, pod)
	if err != nil {
		return nil, err
	}
	// Sized once: growing by append copies every plan on the way, per admission.
	p.images = make([]imagePlan, 0, len(candidates))
	for _, s := range candidates {
		ip, problem := planImage(pol, s, in, pod, known, p.PreferredMirrors)
		if problem != "" {
			p.warnings = append(p.warnings, s.field()+": "+problem)
			p.problems = append(p.problems, Unpinnable{Field: s.field(), Image: s.image, Reason: problem})
		}
		if ip == nil {
			continue
		}
		if setPolicy {
			ip.pullPolicy = d.PullPolicy
		}
		p.images = append(p.images, *ip)
	}
	// Pull secrets only serve image fields; without any there may be no spec to add them to.
	if in.Operation == admissionv1.Create && len(candidates) > 0 {
		p.secrets, p.createSecrets = missingSecrets(pod.Spec.ImagePullSecrets, d.PullSecrets)
		p.injected = d.PullSecrets
	}
	return p, nil
}

// excludedPod names why exclude.owners or exclude.podSelector leave the pod alone, if they do.
// Operators compare the image they wrote with the pod's and recreate a pod that differs, on
// CREATE as on UPDATE, so neither is touched.
func excludedPod(pol *policy.Compiled, pod *podView) (string, error) {
	if !pol.ExcludesPods() {
		return "", nil
	}
	var owners []ownerRef
	if err := decodeRaw(pod.Metadata.OwnerReferences, &owners); err != nil {
		return "", fmt.Errorf("%w: metadata.ownerReferences: %w", ErrBadRequest, err)
	}
	for _, o := range owners {
		if pol.ExcludedOwner(o.APIVersion, o.Kind) {
			return SkipOwnerExcluded, nil
		}
	}
	var labels map[string]string
	if err := decodeRaw(pod.Metadata.Labels, &labels); err != nil {
		return "", fmt.Errorf("%w: metadata.labels: %w", ErrBadRequest, err)
	}
	if pol.ExcludedPod(labels) {
		return SkipPodExcluded, nil
	}
	return "", nil
}

// decodeRaw decodes a member kept as raw JSON; absent or null leaves v as it is.
func decodeRaw(raw jsontext.Value, v any) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	return kjson.Unmarshal(raw, v)
}

// changeable returns the image fields this admission may change, and whether their pull policy
// may change too. The API server rejects any other change: on UPDATE only container images may
// change, and through the ephemeralcontainers subresource only new ephemeral containers.
func changeable(in Input, pod *podView) ([]site, bool, error) {
	all := sites(&pod.Spec)
	if in.Operation == admissionv1.Create && in.SubResource == "" {
		return all, true, nil
	}
	if in.Operation != admissionv1.Update {
		return nil, false, fmt.Errorf("%w: operation %q on pods is not mutated", ErrBadRequest, in.Operation)
	}
	old, err := in.oldObject()
	if err != nil {
		return nil, false, err
	}
	oldSites := map[listKind]map[int]site{}
	for _, s := range sites(&old.Spec) {
		if oldSites[s.kind] == nil {
			oldSites[s.kind] = map[int]site{}
		}
		oldSites[s.kind][s.index] = s
	}
	var out []site
	switch in.SubResource {
	case "":
		for _, s := range all {
			o, ok := oldSites[s.kind][s.index]
			// An unchanged image stays as it is: rewriting it would restart a running container.
			if (s.kind == containers || s.kind == initContainers) && ok && o.name == s.name && o.image != s.image {
				out = append(out, s)
			}
		}
		return out, false, nil
	case "ephemeralcontainers":
		existing := map[string]bool{}
		for _, o := range oldSites[ephemeralContainers] {
			existing[o.name] = true
		}
		for _, s := range all {
			if s.kind == ephemeralContainers && !existing[s.name] {
				out = append(out, s)
			}
		}
		return out, true, nil
	}
	return nil, false, fmt.Errorf("%w: subresource %q is not mutated", ErrBadRequest, in.SubResource)
}

// planImage decides one image. A nil plan with a problem means the image is left untouched.
func planImage(pol *policy.Compiled, s site, in Input, pod *podView, known *policyDecisions, picks map[string]policy.MirrorTarget) (*imagePlan, string) {
	d := known.decide(pol, s.image)
	if d.problem != "" {
		return nil, d.problem
	}
	if d.excluded {
		return nil, ""
	}
	if m, ok := picks[d.ref.registry]; ok {
		d = d.preferring(m)
	}
	ip := &imagePlan{site: s, ref: d.ref, target: d.target, mirror: d.mirror, rewritten: d.rewritten, alternates: d.alternates}
	if d.resolve {
		ip.request = &contract.ResolveRequest{Ref: d.resolveTag, Alternates: d.alternateTags, Upstream: d.upstream}
		if pol.UsePodPullSecrets() {
			ip.request.Namespace = in.Namespace
			for _, ps := range pod.Spec.ImagePullSecrets {
				ip.request.PullSecrets = append(ip.request.PullSecrets, ps.Name)
			}
		}
	}
	return ip, ""
}

// missingSecrets returns the wanted names the pod lacks, in policy order.
func missingSecrets(have []corev1.LocalObjectReference, want []string) ([]string, bool) {
	present := map[string]bool{}
	for _, h := range have {
		present[h.Name] = true
	}
	var add []string
	for _, w := range want {
		if !present[w] {
			add = append(add, w)
			present[w] = true
		}
	}
	return add, len(have) == 0
}

func decodePod(raw []byte, what string) (*podView, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, emptyObject(what)
	}
	var pod podView
	// Case-sensitive, as the API server decodes: encoding/json would also read "SPEC" or
	// "Image", and the patch would then name paths the object does not have.
	if err := kjson.Unmarshal(raw, &pod); err != nil {
		return nil, fmt.Errorf("%w: %s is not a Pod: %w", ErrBadRequest, what, err)
	}
	return &pod, checkKind(&pod, what)
}

func emptyObject(what string) error {
	return fmt.Errorf("%w: %s is empty", ErrBadRequest, what)
}

// checkKind refuses an object that says it is something other than a v1 Pod.
func checkKind(pod *podView, what string) error {
	if pod.Kind != "" && (pod.Kind != "Pod" || (pod.APIVersion != "" && pod.APIVersion != "v1")) {
		return fmt.Errorf("%w: %s is %s %s, not a v1 Pod", ErrBadRequest, what, pod.APIVersion, pod.Kind)
	}
	return nil
}

// Requests lists what to resolve, one request per distinct reference.
func (p *Plan) Requests() []contract.ResolveRequest {
	seen := map[string]bool{}
	out := make([]contract.ResolveRequest, 0, len(p.images))
	for _, ip := range p.images {
		if ip.request == nil || seen[ip.request.Ref.String()] {
			continue
		}
		seen[ip.request.Ref.String()] = true
		out = append(out, *ip.request)
	}
	return out
}
