package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/policy"
	"github.com/pullgate/pullgate/pkg/report"
	"github.com/pullgate/pullgate/pkg/resolve"
)

type auditOptions struct {
	kubeconfig   string
	policyPath   string
	namespace    string
	output       string
	resolve      bool
	ownNamespace string
	workers      int
}

func parseAudit(args []string, stdout, stderr io.Writer) (auditOptions, error) {
	o := auditOptions{}
	fs := newFlags("audit", " [--kubeconfig FILE] [--policy FILE] [-n NS] [-o table|yaml|json]")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig (default in-cluster)")
	fs.StringVar(&o.policyPath, "policy", "", "policy file (default: the policy ConfigMap the chart installed in --pullgate-namespace)")
	fs.StringVar(&o.namespace, "n", "", "only this namespace (default all)")
	fs.StringVar(&o.output, "o", "table", "output: table, or yaml|json (openreports.io/v1alpha1 Reports and a ClusterReport, as a List)")
	fs.BoolVar(&o.resolve, "resolve", true, "resolve tags through the registries as admission would; false reports pins without digests")
	fs.StringVar(&o.ownNamespace, "pullgate-namespace", defaultNamespace, "pullgate's namespace: never changed by admission, and where the chart's policy is")
	fs.IntVar(&o.workers, "workers", 16, "registry lookups at a time")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return o, err
	}
	switch o.output {
	case "table", "yaml", "json":
	default:
		return o, badUsage(fs, stderr, fmt.Sprintf("-o %q: want table, yaml or json", o.output))
	}
	if fs.NArg() > 0 {
		return o, badUsage(fs, stderr, fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	return o, nil
}

// runAudit prints what the policy would change, or finds not changed, in the running pods.
func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseAudit(args, stdout, stderr)
	if err != nil {
		return err
	}
	kube, err := kubeClient(o.kubeconfig)
	if err != nil {
		return err
	}
	if kube == nil {
		return errors.New("no cluster to audit: pass --kubeconfig (or run in a pod)")
	}
	pol, err := auditPolicy(ctx, kube, o)
	if err != nil {
		return err
	}
	start := time.Now()
	nss, pods, err := listCluster(ctx, kube, o.namespace, stderr)
	if err != nil {
		return err
	}
	scan := report.Plan(pol, nss, pods, report.Options{OwnNamespace: o.ownNamespace})
	res, err := scanResolver(ctx, pol, kube, o.ownNamespace, o.resolve, stderr)
	if err != nil {
		return err
	}
	reqs := scan.Requests()
	fmt.Fprintf(stderr, "resolving %d distinct tags\n", len(reqs))
	outcomes := report.Resolve(ctx, res, reqs, o.workers, pol.ResolveTimeout(), progress(stderr, "resolved"))
	if err := ctx.Err(); err != nil {
		return err
	}
	in := inspector(ctx, kube, res)
	in.Timeout = pol.ResolveTimeout()
	findings := scan.FinishWith(outcomes, scan.Inspect(ctx, outcomes, in))
	fmt.Fprintf(stderr, "audited %d pods in %d namespaces in %s\n", len(pods), len(findings.Namespaces), time.Since(start).Round(time.Millisecond))
	if o.output == "table" {
		return printAudit(stdout, findings)
	}
	return printReports(stdout, o.output, findings)
}

// scanResolver is the resolver of audit and explain: none with --resolve=false (pins are
// reported without digests), credentials read from the cluster when there is one.
func scanResolver(ctx context.Context, pol *policy.Compiled, kube kubernetes.Interface, namespace string, on bool, stderr io.Writer) (contract.Resolver, error) {
	if !on {
		return nil, nil
	}
	var opts resolve.Options
	var err error
	if kube == nil {
		opts, err = resolverOptions(ctx, pol, nil)
	} else {
		opts, err = resolverOptions(ctx, pol, &secrets{client: kube, namespace: namespace})
	}
	if err != nil {
		fmt.Fprintf(stderr, "warning: %s\n", oneLine(err.Error()))
	}
	r, err := resolve.New(opts)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// auditPolicy is --policy, or the policy the chart installed.
func auditPolicy(ctx context.Context, kube kubernetes.Interface, o auditOptions) (*policy.Compiled, error) {
	if o.policyPath != "" {
		return policy.Load(o.policyPath)
	}
	cms, err := kube.CoreV1().ConfigMaps(o.ownNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading the installed policy (or pass --policy FILE): %w", err)
	}
	for _, cm := range cms.Items {
		if data, ok := cm.Data["policy.yaml"]; ok && strings.HasSuffix(cm.Name, "-policy") {
			pol, err := policy.Check([]byte(data))
			if err != nil {
				return nil, fmt.Errorf("the installed policy %s/%s: %w", cm.Namespace, cm.Name, err)
			}
			return pol, nil
		}
	}
	return nil, fmt.Errorf("no policy ConfigMap (*-policy with policy.yaml) in namespace %s: pass --policy FILE or --pullgate-namespace", o.ownNamespace)
}

// listPage is how many pods one list call returns: 10,000 pods come in 20 calls, each a few MB.
const listPage = 500

// listCluster reads the namespaces and, page by page, the pods, keeping what a scan reads.
func listCluster(ctx context.Context, kube kubernetes.Interface, namespace string, stderr io.Writer) ([]report.Namespace, []*corev1.Pod, error) {
	var nss []report.Namespace
	if namespace != "" {
		ns, err := kube.CoreV1().Namespaces().Get(ctx, namespace, metav1.GetOptions{})
		if err != nil {
			return nil, nil, fmt.Errorf("reading namespace %s: %w", namespace, err)
		}
		nss = append(nss, report.Namespace{Name: ns.Name, Labels: ns.Labels, Annotations: ns.Annotations})
	} else {
		list, err := kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, nil, fmt.Errorf("listing namespaces: %w", err)
		}
		for _, ns := range list.Items {
			nss = append(nss, report.Namespace{Name: ns.Name, Labels: ns.Labels, Annotations: ns.Annotations})
		}
	}
	var pods []*corev1.Pod
	opts := metav1.ListOptions{Limit: listPage}
	for {
		list, err := kube.CoreV1().Pods(namespace).List(ctx, opts)
		if err != nil {
			return nil, nil, fmt.Errorf("listing pods: %w", err)
		}
		for i := range list.Items {
			slim, _ := report.Slim(&list.Items[i])
			pods = append(pods, slim.(*corev1.Pod))
		}
		fmt.Fprintf(stderr, "listed %d pods\n", len(pods))
		if list.Continue == "" {
			return nss, pods, nil
		}
		opts.Continue = list.Continue
	}
}

// progress reports on stderr at most once a second, and at the end.
func progress(w io.Writer, what string) func(done, total int) {
	last := time.Now()
	return func(done, total int) {
		if done == total || time.Since(last) > time.Second {
			last = time.Now()
			fmt.Fprintf(w, "%s %d/%d\n", what, done, total)
		}
	}
}

func printAudit(w io.Writer, f *report.Findings) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tMODE\tPODS\tCHANGED\tDRIFTED\tREWRITE\tPIN\tPULL-POLICY\tPULL-SECRET\tUNPINNABLE\tSKIPPED")
	for _, ns := range f.Namespaces {
		c := ns.Counts
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", ns.Name, modeText(ns), ns.Pods, ns.Changed, ns.Drifted,
			c.Rewrite, c.Pin, c.PullPolicy, c.PullSecret, c.Unpinnable, skippedText(ns.Skipped))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, ns := range f.Namespaces {
		var lines []string
		for _, wl := range ns.Workloads {
			if len(wl.Findings) == 0 && wl.Skipped == "" {
				continue
			}
			head := fmt.Sprintf("  %s/%s (%d %s)", wl.Kind, wl.Name, wl.Pods, plural(wl.Pods, "pod"))
			if wl.Skipped != "" {
				lines = append(lines, head+": skipped, "+wl.Skipped)
				continue
			}
			lines = append(lines, head)
			for _, fd := range wl.Findings {
				lines = append(lines, "    "+findingText(fd))
			}
		}
		if len(lines) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s (%s):\n%s\n", ns.Name, modeText(ns), strings.Join(lines, "\n"))
	}
	return nil
}

func modeText(ns report.NamespaceFindings) string {
	m := strings.ToLower(ns.Mode)
	if ns.Rule != "" {
		m += ", rule " + ns.Rule
	}
	return m
}

func skippedText(s map[string]int) string {
	if len(s) == 0 {
		return "0"
	}
	var parts []string
	for reason, n := range s {
		parts = append(parts, fmt.Sprintf("%d %s", n, reason))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

func plural(n int, s string) string {
	if n == 1 {
		return s
	}
	return s + "s"
}

// findingText is one finding in a line: "fail drift pin spec.containers[0].image: a -> b (2 pods)".
func findingText(fd report.Finding) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", fd.Result, fd.Rule)
	// For these the reason is the text.
	said := fd.Rule == report.RuleUnpinnable || fd.Rule == report.RuleDigestMismatch ||
		fd.Rule == report.RuleMissingPullSecret || fd.Rule == report.RulePlatformMismatch
	if !said && fd.Reason != "" {
		b.WriteString(" " + fd.Reason)
	}
	fmt.Fprintf(&b, " %s:", fd.Field)
	switch {
	case said:
		fmt.Fprintf(&b, " %q: %s", fd.From, fd.Reason)
	case fd.Rule == report.RulePullSecret || fd.Reason == report.RulePullSecret:
		fmt.Fprintf(&b, " add %s", fd.To)
	default:
		fmt.Fprintf(&b, " %s -> %s", cmp.Or(fd.From, "(unset)"), fd.To)
	}
	if fd.Cause != "" {
		b.WriteString(" [" + fd.Cause + "]")
	}
	if fd.Pods > 1 {
		fmt.Fprintf(&b, " (%d pods)", fd.Pods)
	}
	return b.String()
}

// printReports writes the reports as a v1 List, which kubectl apply -f takes as it is.
func printReports(w io.Writer, format string, f *report.Findings) error {
	reports, cluster := report.Reports(f, time.Now())
	items := make([]any, 0, len(reports)+1)
	for _, r := range reports {
		items = append(items, r)
	}
	items = append(items, cluster)
	list := map[string]any{"apiVersion": "v1", "kind": "List", "items": items}
	raw, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	if format == "yaml" {
		if raw, err = yaml.JSONToYAML(raw); err != nil {
			return err
		}
	} else {
		raw = append(raw, '\n')
	}
	_, err = w.Write(raw)
	return err
}
