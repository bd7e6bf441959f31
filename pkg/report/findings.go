package report

import (
	"cmp"
	"errors"
	"slices"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/policy"
)

// Rules: the stable vocabulary of report results. The first four are pkg/mutate's actions
// (metric label values rewrite, pin, pullPolicy, pullSecret) as a pod not yet opted in or in an
// audit namespace would get them; drift and not-from-mirror are the same changes still owed by
// a pod of an enforce namespace.
const (
	RuleRewrite       = "rewrite"
	RulePin           = "pin"
	RulePullPolicy    = "pull-policy"
	RulePullSecret    = "pull-secret"
	RuleUnpinnable    = "unpinnable"
	RuleDrift         = "drift"
	RuleNotFromMirror = "not-from-mirror"
	// RuleDigestMismatch: the mirror serves another digest for the tag than its upstream;
	// the finding's Cause is contract.CauseConversion, CauseTrimmedIndex or CauseDiffers.
	RuleDigestMismatch = "digest-mismatch"
)

// Results, as openreports and wgpolicyk8s spell them.
const (
	ResultFail = "fail"
	ResultWarn = "warn"
)

// Modes of a namespace as reports show them, besides policy.ModeEnforce and policy.ModeAudit.
const (
	ModeNotOptedIn = "not opted in"
	ModeExcluded   = "excluded"
)

// Drift causes, from the pod's mutate.OriginalAnnotation.
const (
	// CauseNotAdmitted: no annotation, pullgate did not change the pod when it was created:
	// it was down (failurePolicy Ignore), or the namespace opted in later.
	CauseNotAdmitted = "not-admitted-by-pullgate"
	// CausePolicyChanged: admitted under a policy of another generation.
	CausePolicyChanged = "policy-changed"
	// CauseAdmittedUnpinned: admitted under this policy, but some change could not be made then
	// (a registry failure with onError: Keep).
	CauseAdmittedUnpinned = "admitted-unpinned"
)

// ErrNotResolved is the outcome of a tag not looked up (webhook audit --resolve=false): its pin
// is reported as a pin to a digest not known.
var ErrNotResolved = errors.New("digest not looked up")

// NotLookedUp is the "to" of a pin whose digest was not looked up.
const NotLookedUp = "(digest not looked up)"

// Namespace is what a report reads of a namespace.
type Namespace struct {
	Name   string
	Labels map[string]string
	// Annotations carry the overrides policy.TenantOverrides may allow.
	Annotations map[string]string
}

// Options are the settings of a scan.
type Options struct {
	// OwnNamespace is pullgate's, which admission never changes.
	OwnNamespace string
}

// Workload is a pod's top-level owner.
type Workload struct {
	APIVersion string
	Kind       string
	Name       string
}

// Finding is one thing a workload's pods would get, or lack, with how many pods share it.
type Finding struct {
	Rule   string
	Result string
	Field  string
	From   string
	To     string
	Reason string // unpinnable, digest-mismatch: why
	Cause  string // drift, not-from-mirror: see Cause*; digest-mismatch: the likely cause
	Pods   int
}

// WorkloadFindings is one workload's findings.
type WorkloadFindings struct {
	Workload
	Pods     int
	Skipped  string // the skip reason shared by its pods, if they were skipped
	Findings []Finding
}

// Counts are changes by kind: one per image field (rewrite, pin, pull policy), one per added
// secret name.
type Counts struct {
	Rewrite    int
	Pin        int
	PullPolicy int
	PullSecret int
	Unpinnable int
	// MissingPullSecret and PlatformMismatch count the results of Inspect's checks.
	MissingPullSecret int
	PlatformMismatch  int
}

// NamespaceFindings is what the scan found in one namespace.
type NamespaceFindings struct {
	Name string
	// Mode is policy.ModeEnforce or ModeAudit as strings, ModeNotOptedIn or ModeExcluded.
	Mode string
	Rule string
	Pods int
	// Changed counts the pods with at least one change to find; Drifted those of an enforce
	// namespace; Flagged those with a result of Inspect's checks.
	Changed int
	Drifted int
	Flagged int
	Counts  Counts
	// Skipped counts pods left alone by reason (pkg/mutate's Skip* words, or "invalid" for a
	// pod the planner cannot read).
	Skipped   map[string]int
	Workloads []WorkloadFindings
}

// Findings are a whole scan's.
type Findings struct {
	Generation string // the policy's
	Namespaces []NamespaceFindings
}

// Scan is pods planned under one policy, waiting for the digests of their tags.
type Scan struct {
	pol   *policy.Compiled
	nss   []*nsScan
	reqs  []contract.ResolveRequest
	known map[string]bool
}

type nsScan struct {
	Namespace
	mode string
	rule string
	pods []podScan
}

type podScan struct {
	workload Workload
	plan     *mutate.Plan
	skip     string
	original string // mutate.OriginalAnnotation, if any
}

// InvalidPod is the skip reason of a pod the planner cannot read.
const InvalidPod = "invalid"

// Plan decides every pod as a CREATE in its namespace; namespaces without pods are left out.
// A namespace not opted in is planned as if labelled pullgate.dev/mode=enforce: what opting in
// would do to its pods.
func Plan(pol *policy.Compiled, namespaces []Namespace, pods []*corev1.Pod, opts Options) *Scan {
	s := &Scan{pol: pol, known: map[string]bool{}}
	byName := map[string]*nsScan{}
	for _, n := range namespaces {
		byName[n.Name] = &nsScan{Namespace: n}
	}
	for _, pod := range pods {
		ns := byName[pod.Namespace]
		if ns == nil {
			ns = &nsScan{Namespace: Namespace{Name: pod.Namespace}}
			byName[pod.Namespace] = ns
		}
		ns.pods = append(ns.pods, s.planPod(ns, pod, opts))
	}
	for _, ns := range byName {
		if len(ns.pods) > 0 {
			s.nss = append(s.nss, ns)
		}
	}
	slices.SortFunc(s.nss, func(a, b *nsScan) int { return strings.Compare(a.Name, b.Name) })
	return s
}

// OptedIn reports whether admission sees the namespace's pods: the chart's webhook selects
// namespaces labelled pullgate.dev/mode=enforce|audit.
func OptedIn(labels map[string]string) bool {
	switch strings.ToLower(labels[policy.ModeLabel]) {
	case "enforce", "audit":
		return true
	}
	return false
}

func (s *Scan) planPod(ns *nsScan, pod *corev1.Pod, opts Options) podScan {
	ps := podScan{workload: TopOwner(pod), original: pod.Annotations[mutate.OriginalAnnotation]}
	labels := ns.Labels
	if !OptedIn(labels) {
		labels = withMode(labels)
	}
	raw, err := podJSON(pod)
	if err != nil {
		ps.skip = InvalidPod
		return ps
	}
	plan, err := mutate.NewPlan(s.pol, mutate.Input{
		Operation:            admissionv1.Create,
		Namespace:            pod.Namespace,
		NamespaceLabels:      labels,
		NamespaceAnnotations: ns.Annotations,
		OwnNamespace:         opts.OwnNamespace,
		Object:               raw,
	})
	if err != nil {
		ps.skip = InvalidPod
		return ps
	}
	if ns.mode == "" {
		switch {
		case plan.Skip == mutate.SkipNamespaceExcluded || plan.Skip == mutate.SkipOwnNamespace:
			ns.mode = ModeExcluded
		case !OptedIn(ns.Labels):
			ns.mode, ns.rule = ModeNotOptedIn, plan.Rule
		case plan.Skip == "":
			ns.mode, ns.rule = string(plan.Mode), plan.Rule
		}
	}
	if plan.Skip != "" {
		ps.skip = plan.Skip
		return ps
	}
	ps.plan = plan
	for _, r := range plan.Requests() {
		if k := key(r); !s.known[k] {
			s.known[k] = true
			s.reqs = append(s.reqs, r)
		}
	}
	return ps
}

func withMode(labels map[string]string) map[string]string {
	out := make(map[string]string, len(labels)+1)
	for k, v := range labels {
		out[k] = v
	}
	out[policy.ModeLabel] = "enforce"
	return out
}

// key is how outcomes are keyed, as mutate.Plan.Apply reads them.
func key(r contract.ResolveRequest) string { return r.Ref.String() }

// Requests lists the distinct tags to resolve.
func (s *Scan) Requests() []contract.ResolveRequest { return s.reqs }

// Finish applies the digests (keyed as mutate.Plan.Apply reads them) and gathers the findings.
func (s *Scan) Finish(outcomes map[string]contract.Outcome) *Findings {
	return s.FinishWith(outcomes, Checks{})
}

// FinishWith is Finish with the results of Inspect's checks among the findings.
func (s *Scan) FinishWith(outcomes map[string]contract.Outcome, checks Checks) *Findings {
	f := &Findings{Generation: s.pol.Generation()}
	for _, ns := range s.nss {
		f.Namespaces = append(f.Namespaces, s.finishNamespace(ns, outcomes, checks))
	}
	return f
}

type workloadAcc struct {
	w        *WorkloadFindings
	findings map[Finding]int // without Pods: index into w.Findings
	skips    map[string]int
}

func (s *Scan) finishNamespace(ns *nsScan, outcomes map[string]contract.Outcome, checks Checks) NamespaceFindings {
	nf := NamespaceFindings{Name: ns.Name, Mode: cmp.Or(ns.mode, ModeExcluded), Rule: ns.rule, Pods: len(ns.pods), Skipped: map[string]int{}}
	if ns.mode == "" && !OptedIn(ns.Labels) {
		nf.Mode = ModeNotOptedIn // every pod was skipped for its own reasons
	}
	enforce := nf.Mode == string(policy.ModeEnforce)
	accs := map[Workload]*workloadAcc{}
	var order []Workload
	for _, ps := range ns.pods {
		acc := accs[ps.workload]
		if acc == nil {
			acc = &workloadAcc{w: &WorkloadFindings{Workload: ps.workload}, findings: map[Finding]int{}, skips: map[string]int{}}
			accs[ps.workload] = acc
			order = append(order, ps.workload)
		}
		acc.w.Pods++
		if ps.skip != "" {
			nf.Skipped[ps.skip]++
			acc.skips[ps.skip]++
			continue
		}
		found := podFindings(ps, ps.plan.Apply(outcomes), enforce, s.pol.Generation(), &nf.Counts)
		if len(found) > 0 {
			nf.Changed++
			if enforce && hasDrift(found) {
				nf.Drifted++
			}
		}
		if checked := checkFindings(ns.Name, ps, outcomes, checks, enforce, &nf.Counts); len(checked) > 0 {
			nf.Flagged++
			found = append(found, checked...)
		}
		for _, fd := range found {
			if i, ok := acc.findings[fd]; ok {
				acc.w.Findings[i].Pods++
				continue
			}
			acc.findings[fd] = len(acc.w.Findings)
			fd.Pods = 1
			acc.w.Findings = append(acc.w.Findings, fd)
		}
	}
	for _, w := range order {
		acc := accs[w]
		if len(acc.skips) == 1 {
			for reason, n := range acc.skips {
				if n == acc.w.Pods {
					acc.w.Skipped = reason
				}
			}
		}
		nf.Workloads = append(nf.Workloads, *acc.w)
	}
	slices.SortFunc(nf.Workloads, func(a, b WorkloadFindings) int {
		return cmp.Or(strings.Compare(a.Kind, b.Kind), strings.Compare(a.Name, b.Name))
	})
	return nf
}

func hasDrift(fs []Finding) bool {
	for _, f := range fs {
		if f.Result == ResultFail {
			return true
		}
	}
	return false
}
