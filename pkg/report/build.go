package report

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	openreports "github.com/openreports/reports-api/apis/openreports.io/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Bounds of one report object, learned from Kyverno's etcd incidents (kyverno#7138, #2674):
// reports written by a controller for every namespace must stay far below etcd's 1.5 MiB
// request limit, and readable.
const (
	MaxResults = 100
	MaxBytes   = 256 << 10
	// maxProperty clips a property value: a 1 KiB image name must not crowd out the rest.
	maxProperty = 256
)

// Names and labels of the report objects pullgate writes.
const (
	Name           = "pullgate"
	PolicyName     = "pullgate"
	Source         = "pullgate"
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedBy      = "pullgate"
	// OmittedAnnotation counts the results left out of a report to keep it bounded; the summary
	// counts them all.
	OmittedAnnotation = "pullgate.dev/omitted-results"
	// ContentAnnotation is a digest of the results without their timestamps: the writer
	// skips a report whose content has not changed.
	ContentAnnotation = "pullgate.dev/content"
)

// messages are the stable texts per rule (the changing details are in the properties). gosec
// takes a map with "secret" in it for credentials.
var messages = map[string]string{ //nolint:gosec // G101: messages, not credentials
	RuleRewrite:       "the image would be pulled from the mirror",
	RulePin:           "the image would be pinned to a digest",
	RulePullPolicy:    "the image pull policy would be set",
	RulePullSecret:    "the mirror's pull secret would be added to the pod",
	RuleUnpinnable:    "the image could not be pinned to a digest",
	RuleNotFromMirror: "the running image is not pulled from the mirror the policy names",
	RuleDrift:         "the running pod is not as the policy makes it",
	// The same checks as admission's warnings, in the same words (mutate.MissingSecretMessage,
	// mutate.PlatformMismatch) in the result's reason.
	RuleMissingPullSecret: "a pull secret the policy gives the pods does not exist in the namespace",
	RulePlatformMismatch:  "the pinned digest does not cover every platform the policy requires",
	RuleDigestMismatch:    "the mirror serves another digest for the tag than its upstream (signatures keyed on the upstream's do not verify)",
}

// Message is the stable message of a rule.
func Message(rule string) string { return messages[rule] }

// Reports turns findings into one openreports Report per namespace with findings and a
// ClusterReport summary, each bounded.
func Reports(f *Findings, now time.Time) ([]openreports.Report, openreports.ClusterReport) {
	ts := metav1.Timestamp{Seconds: now.Unix()}
	var out []openreports.Report
	var cluster []openreports.ReportResult
	for _, ns := range f.Namespaces {
		results, pass := namespaceResults(ns, ts)
		if len(results) > 0 {
			r := openreports.Report{
				TypeMeta:   metav1.TypeMeta{APIVersion: openreports.SchemeGroupVersion.String(), Kind: "Report"},
				ObjectMeta: metav1.ObjectMeta{Name: Name, Namespace: ns.Name, Labels: map[string]string{ManagedByLabel: ManagedBy}},
				Source:     Source,
				Scope:      &corev1.ObjectReference{APIVersion: "v1", Kind: "Namespace", Name: ns.Name},
			}
			r.Summary, r.Results, r.Annotations = bound(results, pass)
			r.Configuration = &openreports.ReportConfiguration{Limits: openreports.Limits{MaxResults: MaxResults}}
			out = append(out, r)
		}
		cluster = append(cluster, namespaceSummary(ns, ts)...)
	}
	c := openreports.ClusterReport{
		TypeMeta:   metav1.TypeMeta{APIVersion: openreports.SchemeGroupVersion.String(), Kind: "ClusterReport"},
		ObjectMeta: metav1.ObjectMeta{Name: Name, Labels: map[string]string{ManagedByLabel: ManagedBy}},
		Source:     Source,
	}
	passed := 0
	for _, ns := range f.Namespaces {
		if ns.Changed == 0 && ns.Flagged == 0 {
			passed++
		}
	}
	c.Summary, c.Results, c.Annotations = bound(cluster, passed)
	c.Configuration = &openreports.ReportConfiguration{Limits: openreports.Limits{MaxResults: MaxResults}}
	return out, c
}

// namespaceResults is one result per workload and finding; pass counts the workloads without.
func namespaceResults(ns NamespaceFindings, ts metav1.Timestamp) ([]openreports.ReportResult, int) {
	var out []openreports.ReportResult
	pass := 0
	for _, w := range ns.Workloads {
		if len(w.Findings) == 0 {
			if w.Skipped == "" {
				pass++
			}
			continue
		}
		subject := corev1.ObjectReference{APIVersion: w.APIVersion, Kind: w.Kind, Namespace: ns.Name, Name: w.Name}
		for _, fd := range w.Findings {
			props := map[string]string{"field": fd.Field, "pods": strconv.Itoa(fd.Pods), "mode": ns.Mode}
			set := func(k, v string) {
				if v != "" {
					props[k] = clip(v)
				}
			}
			switch {
			case fd.Rule == RulePullPolicy || fd.Reason == RulePullPolicy:
				set("was", fd.From) // a pull policy, not an image
			case fd.Rule == RuleMissingPullSecret:
				set("secret", fd.From)
			default:
				set("image", fd.From)
			}
			set("becomes", fd.To)
			set("cause", fd.Cause)
			set("rule", ns.Rule)
			if fd.Rule == RuleUnpinnable || fd.Rule == RuleMissingPullSecret || fd.Rule == RulePlatformMismatch || fd.Rule == RuleDigestMismatch {
				set("reason", fd.Reason)
			} else {
				set("change", fd.Reason)
			}
			out = append(out, openreports.ReportResult{
				Source: Source, Policy: PolicyName, Rule: fd.Rule, Result: openreports.Result(fd.Result),
				Scored: fd.Result == ResultFail, Timestamp: ts, Subjects: []corev1.ObjectReference{subject},
				Description: messages[fd.Rule], Properties: props,
			})
		}
	}
	return out, pass
}

// namespaceSummary is one cluster result per rule found in the namespace.
func namespaceSummary(ns NamespaceFindings, ts metav1.Timestamp) []openreports.ReportResult {
	type agg struct {
		result string
		n      int
	}
	rules := map[string]*agg{}
	var order []string
	for _, w := range ns.Workloads {
		for _, fd := range w.Findings {
			a := rules[fd.Rule]
			if a == nil {
				a = &agg{result: fd.Result}
				rules[fd.Rule] = a
				order = append(order, fd.Rule)
			}
			a.n += fd.Pods
		}
	}
	slices.Sort(order)
	out := make([]openreports.ReportResult, 0, len(order))
	for _, rule := range order {
		a := rules[rule]
		out = append(out, openreports.ReportResult{
			Source: Source, Policy: PolicyName, Rule: rule, Result: openreports.Result(a.result),
			Scored: a.result == ResultFail, Timestamp: ts,
			Subjects:    []corev1.ObjectReference{{APIVersion: "v1", Kind: "Namespace", Name: ns.Name}},
			Description: messages[rule],
			Properties: map[string]string{
				"mode": ns.Mode, "pods": strconv.Itoa(ns.Pods), "findings": strconv.Itoa(a.n),
				"drifted": strconv.Itoa(ns.Drifted), "changed": strconv.Itoa(ns.Changed),
			},
		})
	}
	return out
}

// bound keeps the failures first and at most MaxResults results within MaxBytes; the summary
// counts every result, and the annotations say how many were left out and digest the content.
func bound(results []openreports.ReportResult, pass int) (openreports.ReportSummary, []openreports.ReportResult, map[string]string) {
	sum := openreports.ReportSummary{Pass: pass}
	for _, r := range results {
		switch r.Result {
		case ResultFail:
			sum.Fail++
		case ResultWarn:
			sum.Warn++
		}
	}
	slices.SortStableFunc(results, func(a, b openreports.ReportResult) int {
		return cmp.Compare(rank(a.Result), rank(b.Result))
	})
	kept := results[:min(len(results), MaxResults)]
	// Shrink until the encoding fits: results are near the same size, so this takes a step or two.
	for len(kept) > 0 {
		raw, _ := json.Marshal(kept)
		if len(raw) <= MaxBytes-8<<10 { // room for metadata and summary
			break
		}
		kept = kept[:len(kept)*(MaxBytes-8<<10)/len(raw)*9/10]
	}
	ann := map[string]string{ContentAnnotation: contentDigest(sum, kept)}
	if n := len(results) - len(kept); n > 0 {
		ann[OmittedAnnotation] = strconv.Itoa(n)
	}
	return sum, kept, ann
}

func rank(r openreports.Result) int {
	if r == ResultFail {
		return 0
	}
	return 1
}

// contentDigest digests the results as they would be written, without their timestamps.
func contentDigest(sum openreports.ReportSummary, results []openreports.ReportResult) string {
	h := sha256.New()
	plain := make([]openreports.ReportResult, len(results))
	for i, r := range results {
		r.Timestamp = metav1.Timestamp{}
		plain[i] = r
	}
	_ = json.NewEncoder(h).Encode(struct {
		S openreports.ReportSummary
		R []openreports.ReportResult
	}{sum, plain})
	return hex.EncodeToString(h.Sum(nil)[:8])
}

func clip(s string) string {
	if len(s) <= maxProperty {
		return s
	}
	return s[:maxProperty-3] + "..."
}

// Size is the encoded size of a report object.
func Size(obj any) int {
	raw, err := json.Marshal(obj)
	if err != nil {
		panic(fmt.Sprintf("report: encoding: %v", err))
	}
	return len(raw)
}
