package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/pullgate/pullgate/pkg/policy"
	"github.com/pullgate/pullgate/pkg/prepull"
)

// defaultNamespace is the chart's usual namespace, for commands run from a workstation.
const defaultNamespace = "pullgate-system"

const prepullUsage = `usage: webhook prepull render --policy FILE [flags]
       webhook prepull status [--kubeconfig FILE] [--namespace NS]`

func runPrepull(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, prepullUsage)
		return usageError{"prepull: render or status expected"}
	}
	switch args[0] {
	case "render":
		return runPrepullRender(ctx, args[1:], stdout, stderr)
	case "status":
		return runPrepullStatus(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, prepullUsage)
		return nil
	}
	fmt.Fprintln(stderr, prepullUsage)
	return usageError{fmt.Sprintf("prepull: unknown command %q", args[0])}
}

// prepullFlags are the DaemonSet settings render and controller share.
type prepullFlags struct {
	namespace    string
	namePrefix   string
	sleeperImage string
	pullSecrets  string
}

func (p *prepullFlags) register(fs interface {
	StringVar(*string, string, string, string)
}) {
	p.namespace = cmp.Or(os.Getenv("POD_NAMESPACE"), defaultNamespace)
	fs.StringVar(&p.namespace, "namespace", p.namespace, "namespace of the DaemonSets (default $POD_NAMESPACE, else "+defaultNamespace+")")
	fs.StringVar(&p.namePrefix, "name-prefix", "pullgate-prepull-", "prefix of the DaemonSet names; the group name follows")
	fs.StringVar(&p.sleeperImage, "sleeper-image", "ghcr.io/pullgate/pullgate:"+version, "pullgate's own image, from which the init container copies the sleeper")
	fs.StringVar(&p.pullSecrets, "image-pull-secrets", "", "comma-separated pull secrets for the sleeper image, added to the policy's imagePullSecrets")
}

func (p *prepullFlags) settings() prepull.Settings {
	s := prepull.Settings{Namespace: p.namespace, NamePrefix: p.namePrefix, SleeperImage: p.sleeperImage}
	for _, n := range strings.Split(p.pullSecrets, ",") {
		if n = strings.TrimSpace(n); n != "" {
			s.PullSecrets = append(s.PullSecrets, n)
		}
	}
	return s
}

// runPrepullRender prints the DaemonSets of every group as a multi-document YAML stream, each
// image pinned through the registries exactly as the controller (and the webhook) pins it. A
// tag that cannot be pinned is an error naming it: never an unpinned DaemonSet.
func runPrepullRender(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var pf prepullFlags
	fs := newFlags("prepull render", " --policy FILE [flags]")
	policyPath := fs.String("policy", "", "policy file (required)")
	pf.register(fs)
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if *policyPath == "" {
		return badUsage(fs, stderr, "--policy is required")
	}
	if fs.NArg() > 0 {
		return badUsage(fs, stderr, fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	pol, err := policy.Load(*policyPath)
	if err != nil {
		return err
	}
	res, err := offlineResolver(ctx, pol, stderr)
	if err != nil {
		return err
	}
	groups := pol.Policy().Prepull
	if len(groups) == 0 {
		return fmt.Errorf("%s has no prepull groups", *policyPath)
	}
	s := pf.settings()
	s.PullSecrets = append(append([]string(nil), pol.Policy().ImagePullSecrets...), s.PullSecrets...)
	var docs []string
	var errs []error
	for _, g := range groups {
		pins, err := prepull.PinGroup(ctx, res, pol, g, nil, pol.ResolveTimeout())
		if err != nil {
			return fmt.Errorf("group %s: %w", g.Name, err)
		}
		for _, e := range pins.Errors {
			errs = append(errs, fmt.Errorf("group %s: %w", g.Name, e))
		}
		if len(pins.Errors) > 0 {
			continue
		}
		doc, err := manifest(prepull.DaemonSet(g, pins.Images, s))
		if err != nil {
			return err
		}
		docs = append(docs, doc)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	_, err = io.WriteString(stdout, "---\n"+strings.Join(docs, "---\n"))
	return err
}

// manifest is the YAML of an object without the fields the API server owns.
func manifest(obj runtime.Object) (string, error) {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return "", err
	}
	delete(u, "status")
	if md, ok := u["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	if tmd, ok := dig(u, "spec", "template", "metadata").(map[string]any); ok {
		delete(tmd, "creationTimestamp")
	}
	b, err := yaml.Marshal(u)
	return string(b), err
}

func dig(m map[string]any, keys ...string) any {
	var cur any = m
	for _, k := range keys {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[k]
	}
	return cur
}

// runPrepullStatus prints, per group, the nodes wanted, pulled, pulling and failed, the last
// re-pin, and the reference pulled for each image, from the cluster.
func runPrepullStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("prepull status", " [flags]")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig (default in-cluster)")
	namespace := fs.String("namespace", cmp.Or(os.Getenv("POD_NAMESPACE"), defaultNamespace), "namespace of the controller's DaemonSets")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	client, err := kubeClient(*kubeconfig)
	if err != nil {
		return err
	}
	if client == nil {
		return errors.New("no cluster: pass --kubeconfig")
	}
	sel := metav1.ListOptions{LabelSelector: prepull.ManagedByLabel + "=" + prepull.ManagedBy}
	list, err := client.AppsV1().DaemonSets(*namespace).List(ctx, sel)
	if err != nil {
		return fmt.Errorf("listing pre-pull DaemonSets: %w", err)
	}
	if len(list.Items) == 0 {
		fmt.Fprintf(stdout, "no pre-pull groups in namespace %s\n", *namespace)
		return nil
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "GROUP\tWANTED\tPULLED\tPULLING\tFAILED\tLAST RE-PIN\tPINNED")
	var details []string
	for i := range list.Items {
		ds := &list.Items[i]
		group := ds.Labels[prepull.GroupLabel]
		pods, err := client.CoreV1().Pods(*namespace).List(ctx, metav1.ListOptions{LabelSelector: prepull.GroupLabel + "=" + group})
		if err != nil {
			return fmt.Errorf("listing the pods of group %s: %w", group, err)
		}
		st := prepull.Summarize(ds, pods.Items)
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\n", group, st.Wanted, st.Pulled, st.Pulling, st.Failed,
			cmp.Or(ds.Annotations[prepull.RepinnedAnnotation], "-"), pinnedCondition(ds))
		details = append(details, groupDetails(group, ds, st)...)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = io.WriteString(stdout, strings.Join(details, ""))
	return err
}

func pinnedCondition(ds *appsv1.DaemonSet) string {
	for _, c := range ds.Status.Conditions {
		if c.Type == prepull.ConditionPinned {
			return string(c.Status) + " (" + c.Reason + ")"
		}
	}
	return "-"
}

func groupDetails(group string, ds *appsv1.DaemonSet, st prepull.Status) []string {
	out := []string{"\n" + group + ":\n"}
	pins := prepull.LastPinned(ds)
	srcs := make([]string, 0, len(pins))
	for s := range pins {
		srcs = append(srcs, s)
	}
	sort.Strings(srcs)
	for _, s := range srcs {
		out = append(out, fmt.Sprintf("  %s  %s\n", s, pins[s]))
	}
	for _, c := range ds.Status.Conditions {
		if c.Type == prepull.ConditionPinned && c.Status != "True" {
			out = append(out, "  not pinned: "+c.Message+"\n")
		}
	}
	for _, f := range st.Failures {
		out = append(out, "  failed: "+f+"\n")
	}
	return out
}
