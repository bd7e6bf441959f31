package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/pullgate/pullgate/internal/admissionhttp"
	"github.com/pullgate/pullgate/internal/kjson"
	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/policy"
	"github.com/pullgate/pullgate/pkg/resolve"
)

type mutateOptions struct {
	policyPath string
	file       string
	namespace  string
	ns         mutate.StaticNamespace
	verbosity  int
}

func parseMutate(args []string, stdout, stderr io.Writer) (mutateOptions, error) {
	o := mutateOptions{}
	var labels string
	fs := newFlags("mutate", " --policy FILE [-f FILE] [flags]")
	fs.StringVar(&o.policyPath, "policy", "", "policy file (required)")
	fs.StringVar(&o.file, "f", "-", "AdmissionReview, Pod or workload (Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob; several documents allowed), JSON or YAML; - reads stdin")
	fs.StringVar(&o.namespace, "namespace", "", "namespace for a bare Pod without metadata.namespace (default \"default\")")
	fs.StringVar(&labels, "namespace-labels", "", "labels of the pod's namespace, k=v,k=v (e.g. pullgate.dev/mode=audit)")
	fs.Func("namespace-annotation", "an annotation of the pod's namespace, k=v (e.g. pullgate.dev/mode=Audit); repeat for several", annotationFlag(&o.ns.Annotations))
	fs.IntVar(&o.verbosity, "v", 0, "log verbosity on stderr; 1 logs the decision")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return o, err
	}
	if o.policyPath == "" {
		return o, badUsage(fs, stderr, "--policy is required")
	}
	if fs.NArg() > 0 {
		return o, badUsage(fs, stderr, fmt.Sprintf("unexpected argument %q (use -f FILE)", fs.Arg(0)))
	}
	var err error
	if o.ns.Labels, err = parseLabels(labels); err != nil {
		return o, badUsage(fs, stderr, "--namespace-labels: "+err.Error())
	}
	return o, nil
}

func parseLabels(s string) (map[string]string, error) {
	out := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q is not k=v", kv)
		}
		out[k] = v
	}
	return out, nil
}

// annotationFlag adds one k=v to m per use: annotation values may hold commas
// (pullgate.dev/mirror), so they are not split as labels are.
func annotationFlag(m *map[string]string) func(string) error {
	return func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return fmt.Errorf("%q is not k=v", s)
		}
		if *m == nil {
			*m = map[string]string{}
		}
		(*m)[k] = v
		return nil
	}
}

// runMutate runs one admission the way serve does (same size limit, decoder, handler and
// answer) and prints the answer (for an AdmissionReview) or the mutated Pod (for a Pod); for
// workloads, or several documents, it admits each pod template as its controller's pod and
// prints the manifests as they would run.
func runMutate(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	o, err := parseMutate(args, stdout, stderr)
	if err != nil {
		return err
	}
	logger := logr.Discard()
	if o.verbosity > 0 {
		logger = newLogger(stderr, o.verbosity)
	}
	ctx = ctrllog.IntoContext(ctx, logger)

	pol, err := policy.Load(o.policyPath)
	if err != nil {
		return err
	}
	raw, err := readInput(o.file, stdin)
	if err != nil {
		return err
	}
	ms, err := splitDocuments(raw)
	// A later document that cannot be read is said so; a first one gets decodeInput's message.
	if de := (docError{}); errors.As(err, &de) && de.n > 1 {
		return err
	}
	workloads := err == nil && (len(ms) > 1 || (len(ms) == 1 && ms[0].path != nil))
	var (
		req  admission.Request
		typ  metav1.TypeMeta
		bare bool
	)
	if !workloads {
		if req, typ, bare, err = decodeInput(raw, o.namespace); err != nil {
			return err
		}
	}
	res, err := offlineResolver(ctx, pol, stderr)
	if err != nil {
		return err
	}
	h := mutate.NewHandler(mutate.Handler{Policy: mutate.StaticPolicy{Policy: pol}, Resolver: res, Namespaces: o.ns})
	if workloads {
		return mutateManifests(ctx, h, ms, o.namespace, stdout, stderr)
	}
	resp := admissionhttp.Run(ctx, h, req)
	if !bare {
		answer, err := kjson.AppendReview(nil, admissionhttp.Answer(typ, resp))
		if err != nil {
			return fmt.Errorf("encoding the answer: %w", err)
		}
		var out bytes.Buffer
		if err := json.Indent(&out, answer, "", "  "); err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", out.Bytes())
		return err
	}
	for _, w := range resp.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if !resp.Allowed {
		return fmt.Errorf("denied: %s", resp.Result.Message)
	}
	pod, err := applyPatch(req.Object.Raw, resp.Patch)
	if err != nil {
		return err
	}
	out, err := yaml.JSONToYAML(pod)
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}

// mutateManifests admits each pod and pod template of ms as a CREATE and prints ms as they would
// run; other documents are printed unchanged.
func mutateManifests(ctx context.Context, h admission.Handler, ms []*document, namespace string, stdout, stderr io.Writer) error {
	n := 0
	for _, m := range ms {
		if !m.isPod() {
			fmt.Fprintf(stderr, "%s: not a pod or workload, printed unchanged\n", m)
			continue
		}
		n++
		ns := cmp.Or(m.Namespace, namespace, metav1.NamespaceDefault)
		pod, err := m.podJSON(ns)
		if err != nil {
			return err
		}
		resp := admissionhttp.Run(ctx, h, podRequest(ns, m.Name, pod))
		for _, w := range resp.Warnings {
			fmt.Fprintf(stderr, "warning: %s: %s\n", m, w)
		}
		if !resp.Allowed {
			return fmt.Errorf("%s denied: %s", m, resp.Result.Message)
		}
		if pod, err = applyPatch(pod, resp.Patch); err != nil {
			return err
		}
		if err := m.setPod(pod); err != nil {
			return err
		}
	}
	if n == 0 {
		return fmt.Errorf("no document is %s", inputKinds)
	}
	return writeDocuments(stdout, ms)
}

// applyPatch applies pullgate's own answer to the pod it was given.
func applyPatch(pod []byte, ops []byte) ([]byte, error) {
	if len(ops) == 0 {
		return pod, nil
	}
	patch, err := jsonpatch.DecodePatch(ops)
	if err != nil {
		return nil, fmt.Errorf("decoding our own patch: %w", err)
	}
	if pod, err = patch.Apply(pod); err != nil {
		return nil, fmt.Errorf("applying our own patch: %w", err)
	}
	return pod, nil
}

// podRequest is the admission of pod (JSON) as a CREATE in namespace.
func podRequest(namespace, name string, pod []byte) admission.Request {
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       types.UID("pullgate-mutate"),
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: namespace,
		Name:      name,
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: pod},
	}}
}

// offlineResolver is the resolver of the commands run without a cluster (mutate, prepull
// render): the policy's registries, credentials from files only; a setting that cannot be read
// is a warning, the rest still applies.
func offlineResolver(ctx context.Context, pol *policy.Compiled, stderr io.Writer) (*resolve.Resolver, error) {
	opts, err := resolverOptions(ctx, pol, nil)
	if err != nil {
		fmt.Fprintf(stderr, "warning: %s\n", oneLine(err.Error()))
	}
	return resolve.New(opts)
}

func readInput(file string, stdin io.Reader) ([]byte, error) {
	r := stdin
	name := "stdin"
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("reading input: %w", err)
		}
		defer f.Close()
		r, name = f, file
	}
	data, err := admissionhttp.ReadBody(new(bytes.Buffer), r, -1)
	switch {
	case errors.Is(err, admissionhttp.ErrTooLarge):
		return nil, fmt.Errorf("%s is %d MiB or more, the webhook's request limit", name, admissionhttp.MaxBodySize>>20)
	case errors.Is(err, admissionhttp.ErrEmpty) || (err == nil && len(bytes.TrimSpace(data)) == 0):
		return nil, fmt.Errorf("%s is empty: expected %s", name, inputKinds)
	case err != nil:
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	return data, nil
}

// decodeInput accepts an AdmissionReview, decoded as serve decodes one, or a bare Pod, wrapped
// in a CREATE request. bare reports the latter.
func decodeInput(raw []byte, namespace string) (admission.Request, metav1.TypeMeta, bool, error) {
	var none metav1.TypeMeta
	data, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return admission.Request{}, none, false, fmt.Errorf("input is neither JSON nor YAML: %w", err)
	}
	var head struct {
		metav1.TypeMeta `json:",inline"`
		Request         *struct{} `json:"request"`
		Metadata        struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := kjson.Unmarshal(data, &head); err != nil {
		return admission.Request{}, none, false, fmt.Errorf("input is not a Kubernetes object: %w", err)
	}
	switch head.Kind {
	case "AdmissionReview":
		if head.Request == nil {
			return admission.Request{}, none, false, errors.New("the AdmissionReview has no request")
		}
		req, typ, err := admissionhttp.Decode(data)
		if err != nil {
			return admission.Request{}, none, false, fmt.Errorf("input is not a valid AdmissionReview: %w", err)
		}
		return req, typ, false, nil
	case "Pod":
		ns := cmp.Or(head.Metadata.Namespace, namespace, metav1.NamespaceDefault)
		return podRequest(ns, head.Metadata.Name, data), none, true, nil
	case "":
		return admission.Request{}, none, false, errors.New("input has no kind: expected " + inputKinds)
	}
	return admission.Request{}, none, false, fmt.Errorf("input is a %s, expected %s", head.Kind, inputKinds)
}
