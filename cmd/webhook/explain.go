package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/policy"
	"github.com/pullgate/pullgate/pkg/report"
)

type explainOptions struct {
	policyPath   string
	kubeconfig   string
	file         string
	image        string
	object       string // KIND/NAME in the cluster
	namespace    string
	ns           mutate.NamespaceMeta
	labelsGiven  bool
	ownNamespace string
	resolve      bool
}

func parseExplain(args []string, stdout, stderr io.Writer) (explainOptions, error) {
	o := explainOptions{}
	var labels string
	fs := newFlags("explain", " [--policy FILE] (-f FILE | --image REF | KIND/NAME) [-n NS] [flags]")
	fs.StringVar(&o.policyPath, "policy", "", "policy file (default with --kubeconfig: the policy ConfigMap the chart installed in --pullgate-namespace)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig: read KIND/NAME, the namespace's labels and the installed policy from the cluster")
	fs.StringVar(&o.file, "f", "", "a Pod or workload (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob), YAML or JSON; - reads stdin")
	fs.StringVar(&o.image, "image", "", "one image, as a container of a pod in -n")
	fs.StringVar(&o.namespace, "n", "", "namespace (default: the object's, else \"default\")")
	fs.StringVar(&labels, "namespace-labels", "", "labels of the namespace, k=v,k=v (default with --kubeconfig: read from the cluster)")
	fs.Func("namespace-annotation", "an annotation of the namespace, k=v (e.g. pullgate.dev/mode=Audit); repeat for several (default with --kubeconfig and no --namespace-labels: read from the cluster)", annotationFlag(&o.ns.Annotations))
	fs.StringVar(&o.ownNamespace, "pullgate-namespace", defaultNamespace, "pullgate's namespace, which admission never changes")
	fs.BoolVar(&o.resolve, "resolve", true, "resolve tags through the registries as admission would")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return o, err
	}
	switch fs.NArg() {
	case 0:
	case 1:
		o.object = fs.Arg(0)
	default:
		return o, badUsage(fs, stderr, fmt.Sprintf("unexpected argument %q", fs.Arg(1)))
	}
	sources := 0
	for _, s := range []string{o.file, o.image, o.object} {
		if s != "" {
			sources++
		}
	}
	if sources != 1 {
		return o, badUsage(fs, stderr, "give exactly one of -f FILE, --image REF or KIND/NAME")
	}
	if o.object != "" && o.kubeconfig == "" {
		return o, badUsage(fs, stderr, "KIND/NAME is read from the cluster: pass --kubeconfig")
	}
	if o.policyPath == "" && o.kubeconfig == "" {
		return o, badUsage(fs, stderr, "--policy is required without --kubeconfig")
	}
	var err error
	if o.ns.Labels, err = parseLabels(labels); err != nil {
		return o, badUsage(fs, stderr, "--namespace-labels: "+err.Error())
	}
	o.labelsGiven = labels != ""
	return o, nil
}

// runExplain says, for each pod or pod template, what admission would do to it and why, in the
// words warnings, metrics and reports use.
func runExplain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	o, err := parseExplain(args, stdout, stderr)
	if err != nil {
		return err
	}
	var kube kubernetes.Interface
	if o.kubeconfig != "" {
		if kube, err = kubeClient(o.kubeconfig); err != nil {
			return err
		}
	}
	var pol *policy.Compiled
	if o.policyPath != "" {
		pol, err = policy.Load(o.policyPath)
	} else {
		pol, err = auditPolicy(ctx, kube, auditOptions{ownNamespace: o.ownNamespace})
	}
	if err != nil {
		return err
	}
	docs, err := explainInput(ctx, kube, o, stdin)
	if err != nil {
		return err
	}
	res, err := scanResolver(ctx, pol, kube, o.ownNamespace, o.resolve, stderr)
	if err != nil {
		return err
	}
	n := 0
	for i, d := range docs {
		if !d.isPod() {
			fmt.Fprintf(stderr, "%s: not a pod or workload, not explained\n", d)
			continue
		}
		if n++; i > 0 {
			fmt.Fprintln(stdout)
		}
		ns := cmp.Or(o.namespace, d.Namespace, metav1.NamespaceDefault)
		meta, known, err := explainNamespace(ctx, kube, o, ns)
		if err != nil {
			return err
		}
		if err := explainOne(ctx, stdout, pol, res, d, ns, meta, known, o.ownNamespace); err != nil {
			return err
		}
	}
	if n == 0 {
		return fmt.Errorf("no document is a Pod or a Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob")
	}
	return nil
}

// explainInput is the documents to explain: a file, one image as a pod, or an object of the
// cluster.
func explainInput(ctx context.Context, kube kubernetes.Interface, o explainOptions, stdin io.Reader) ([]*document, error) {
	switch {
	case o.image != "":
		return []*document{newDocument(map[string]any{
			"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": "explain"},
			"spec": map[string]any{"containers": []any{map[string]any{"name": "c0", "image": o.image}}},
		})}, nil
	case o.file != "":
		raw, err := readInput(o.file, stdin)
		if err != nil {
			return nil, err
		}
		return splitDocuments(raw)
	}
	kind, objName, ok := strings.Cut(o.object, "/")
	if !ok || objName == "" {
		return nil, fmt.Errorf("%q: want KIND/NAME, e.g. deployment/web", o.object)
	}
	ns := cmp.Or(o.namespace, metav1.NamespaceDefault)
	var obj runtime.Object
	var err error
	switch strings.ToLower(kind) {
	case "pod", "pods", "po":
		obj, err = kube.CoreV1().Pods(ns).Get(ctx, objName, metav1.GetOptions{})
	case "deployment", "deployments", "deploy":
		obj, err = kube.AppsV1().Deployments(ns).Get(ctx, objName, metav1.GetOptions{})
	case "statefulset", "statefulsets", "sts":
		obj, err = kube.AppsV1().StatefulSets(ns).Get(ctx, objName, metav1.GetOptions{})
	case "daemonset", "daemonsets", "ds":
		obj, err = kube.AppsV1().DaemonSets(ns).Get(ctx, objName, metav1.GetOptions{})
	case "replicaset", "replicasets", "rs":
		obj, err = kube.AppsV1().ReplicaSets(ns).Get(ctx, objName, metav1.GetOptions{})
	case "job", "jobs":
		obj, err = kube.BatchV1().Jobs(ns).Get(ctx, objName, metav1.GetOptions{})
	case "cronjob", "cronjobs", "cj":
		obj, err = kube.BatchV1().CronJobs(ns).Get(ctx, objName, metav1.GetOptions{})
	default:
		return nil, fmt.Errorf("%q: explain reads pods, deployments, statefulsets, daemonsets, replicasets, jobs and cronjobs", kind)
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s in %s: %w", o.object, ns, err)
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	// Typed objects from a client carry no kind.
	u["kind"] = map[string]string{"pod": "Pod", "pods": "Pod", "po": "Pod", "deploy": "Deployment", "sts": "StatefulSet", "ds": "DaemonSet", "rs": "ReplicaSet", "cj": "CronJob"}[strings.ToLower(kind)]
	if u["kind"] == "" {
		u["kind"] = canonicalKind(kind)
	}
	return []*document{newDocument(u)}, nil
}

// canonicalKind is deployments -> Deployment, cronjob -> CronJob.
func canonicalKind(kind string) string {
	k := strings.TrimSuffix(strings.ToLower(kind), "s")
	for known := range templatePath {
		if strings.ToLower(known) == k {
			return known
		}
	}
	return "Pod"
}

// explainNamespace is the namespace's labels and annotations explain decides with, and whether
// the labels are known (given, or read from the cluster): only then can it say a namespace is
// not opted in.
func explainNamespace(ctx context.Context, kube kubernetes.Interface, o explainOptions, ns string) (mutate.NamespaceMeta, bool, error) {
	if o.labelsGiven || kube == nil {
		return o.ns, o.labelsGiven, nil
	}
	n, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		return mutate.NamespaceMeta{}, false, fmt.Errorf("reading namespace %s: %w", ns, err)
	}
	return mutate.NamespaceMeta{Labels: n.Labels, Annotations: n.Annotations}, true, nil
}

// skipWhy says in a sentence what each pkg/mutate skip reason means.
var skipWhy = map[string]string{
	mutate.SkipNamespaceExcluded: "the policy's exclude.namespaces lists the namespace",
	mutate.SkipOwnNamespace:      "pullgate never changes its own namespace, so it can always restart",
	mutate.SkipMirrorPod:         "a static pod's API-server copy cannot change",
	mutate.SkipOptedOut:          "the pod carries " + mutate.SkipAnnotation + "=true and the policy allows opting out",
	mutate.SkipOwnerExcluded:     "the policy's exclude.owners lists the pod's owner kind",
	mutate.SkipPodExcluded:       "the policy's exclude.podSelector selects the pod",
}

func explainOne(ctx context.Context, w io.Writer, pol *policy.Compiled, res contract.Resolver, d *document, ns string, meta mutate.NamespaceMeta, known bool, own string) error {
	labels := meta.Labels
	pod, err := d.podJSON(ns)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s in namespace %s:\n", d, ns)
	if known && !report.OptedIn(labels) {
		fmt.Fprintf(w, "  not opted in: the namespace has no %s=enforce|audit label, so the API server never asks pullgate\n", policy.ModeLabel)
		fmt.Fprintf(w, "  labelled %s=enforce, it would get:\n", policy.ModeLabel)
		with := map[string]string{policy.ModeLabel: "enforce"}
		for k, v := range labels {
			if k != policy.ModeLabel {
				with[k] = v
			}
		}
		labels = with
	}
	plan, err := mutate.NewPlan(pol, mutate.Input{Operation: admissionv1.Create, Namespace: ns, NamespaceLabels: labels, NamespaceAnnotations: meta.Annotations, OwnNamespace: own, Object: pod})
	if err != nil {
		return fmt.Errorf("%s: %w", d, err)
	}
	if plan.Skip != "" {
		fmt.Fprintf(w, "  nothing happens: %s (%s)\n", plan.Skip, skipWhy[plan.Skip])
		return nil
	}
	rule := "none, the policy's top-level settings"
	if plan.Rule != "" {
		rule = plan.Rule
	}
	fmt.Fprintf(w, "  mode %s, rule %s\n", plan.Mode, rule)
	if plan.Mode == policy.ModeAudit {
		fmt.Fprintln(w, "  audit: nothing is changed; each change below is a warning to whoever creates the pod")
	}
	for _, o := range plan.Overrides {
		if o.Applied() {
			fmt.Fprintf(w, "  namespace annotation %s=%s applied\n", o.Annotation, o.Value)
		} else {
			fmt.Fprintf(w, "  namespace annotation %s=%s ignored: %s\n", o.Annotation, o.Value, o.Why)
		}
	}
	r := plan.Apply(report.Resolve(ctx, res, plan.Requests(), 4, pol.ResolveTimeout(), nil))
	if r.Deny != "" {
		fmt.Fprintf(w, "  denied: %s\n", r.Deny)
	}
	var p corev1.Pod
	if err := json.Unmarshal(pod, &p); err != nil {
		return fmt.Errorf("%s: %w", d, err)
	}
	for _, f := range imageFields(&p.Spec) {
		fmt.Fprintf(w, "  %s %s\n", f.field, f.image)
		said := false
		for _, c := range r.Changes {
			if c.Field == f.field || c.Field == strings.TrimSuffix(f.field, ".image")+".imagePullPolicy" {
				fmt.Fprintf(w, "    %s\n", changeText(pol, c))
				said = true
			}
		}
		for _, u := range r.Unpinnable {
			if u.Field == f.field {
				fmt.Fprintf(w, "    %s: %s\n", report.RuleUnpinnable, u.Reason)
				said = true
			}
		}
		for _, m := range r.Mismatches {
			if m.Field == f.field {
				fmt.Fprintf(w, "    %s: %s\n", report.RuleDigestMismatch, &m.DigestMismatch)
			}
		}
		if !said {
			if excludedImage(pol, f.image) {
				fmt.Fprintln(w, "    unchanged: image-excluded (the policy's exclude.images matches it)")
			} else {
				fmt.Fprintln(w, "    unchanged: already as the policy wants")
			}
		}
	}
	for _, c := range r.Changes {
		if c.Action == mutate.ActionPullSecret {
			fmt.Fprintf(w, "  %s\n", changeText(pol, c))
		}
	}
	return nil
}

// changeText is one change, with the report's rule word: "rewrite: a -> b (mirror m for docker.io)".
func changeText(pol *policy.Compiled, c mutate.Change) string {
	word := map[string]string{
		mutate.ActionRewrite: report.RuleRewrite, mutate.ActionPin: report.RulePin,
		mutate.ActionPullPolicy: report.RulePullPolicy, mutate.ActionPullSecret: report.RulePullSecret,
	}[c.Action]
	switch c.Action {
	case mutate.ActionPullSecret:
		return fmt.Sprintf("%s: %s gets %s", word, c.Field, c.To)
	case mutate.ActionRewrite:
		for _, m := range pol.Mirrors() {
			if base := strings.TrimSuffix(m.Host+"/"+m.Prefix, "/"); strings.HasPrefix(c.To, base+"/") {
				return fmt.Sprintf("%s: -> %s (mirror %s for %s)", word, c.To, base, m.Registry)
			}
		}
	case mutate.ActionPullPolicy:
		return fmt.Sprintf("%s: %s -> %s", word, cmp.Or(c.From, "(unset)"), c.To)
	}
	return fmt.Sprintf("%s: -> %s", word, c.To)
}

type imageField struct{ field, image string }

// imageFields are the pod's image fields with the paths pkg/mutate names them by.
func imageFields(s *corev1.PodSpec) []imageField {
	var out []imageField
	for _, l := range []struct {
		name string
		cs   []corev1.Container
	}{{"initContainers", s.InitContainers}, {"containers", s.Containers}} {
		for i, c := range l.cs {
			out = append(out, imageField{fmt.Sprintf("spec.%s[%d].image", l.name, i), c.Image})
		}
	}
	for i, c := range s.EphemeralContainers {
		out = append(out, imageField{fmt.Sprintf("spec.ephemeralContainers[%d].image", i), c.Image})
	}
	for i, v := range s.Volumes {
		if v.Image != nil {
			out = append(out, imageField{fmt.Sprintf("spec.volumes[%d].image.reference", i), v.Image.Reference})
		}
	}
	return out
}

// excludedImage: whether exclude.images matches the image, normalized as pkg/mutate does
// (registry canonical, tag latest when there is neither tag nor digest).
func excludedImage(pol *policy.Compiled, image string) bool {
	ref, err := name.ParseReference(image)
	if err != nil {
		return false
	}
	s := policy.CanonicalRegistry(ref.Context().RegistryStr()) + "/" + ref.Context().RepositoryStr()
	tag, digest := "", ""
	switch r := ref.(type) {
	case name.Tag:
		tag = r.TagStr()
	case name.Digest:
		digest = r.DigestStr()
		if before, _, ok := strings.Cut(image, "@"); ok {
			if i := strings.LastIndex(before, ":"); i > strings.LastIndex(before, "/") {
				tag = before[i+1:]
			}
		}
	}
	if tag != "" || digest == "" {
		s += ":" + cmp.Or(tag, "latest")
	}
	if digest != "" {
		s += "@" + digest
	}
	return pol.ExcludedImage(s)
}
