package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/policy"
	"github.com/pullgate/pullgate/pkg/resolve"
)

// maxInput matches the request body limit of controller-runtime's webhook server, so the
// offline command accepts exactly what the server would.
const maxInput = 7 << 20

type mutateOptions struct {
	policyPath string
	file       string
	namespace  string
	labels     mutate.StaticLabels
	verbosity  int
}

func parseMutate(args []string) (mutateOptions, error) {
	o := mutateOptions{}
	var labels string
	fs := flag.NewFlagSet("mutate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.policyPath, "policy", "", "policy file (required)")
	fs.StringVar(&o.file, "f", "-", "AdmissionReview or Pod, JSON or YAML; - reads stdin")
	fs.StringVar(&o.namespace, "namespace", "", "namespace for a bare Pod without metadata.namespace (default \"default\")")
	fs.StringVar(&labels, "namespace-labels", "", "labels of the pod's namespace, k=v,k=v (e.g. pullgate.dev/mode=audit)")
	fs.IntVar(&o.verbosity, "v", 0, "log verbosity on stderr; 1 logs the decision")
	if err := fs.Parse(args); err != nil {
		return o, usageError{"mutate: " + err.Error()}
	}
	if o.policyPath == "" {
		return o, usageError{"mutate: --policy is required"}
	}
	if fs.NArg() > 0 {
		return o, usageError{fmt.Sprintf("mutate: unexpected argument %q (use -f FILE)", fs.Arg(0))}
	}
	var err error
	if o.labels, err = parseLabels(labels); err != nil {
		return o, usageError{"mutate: --namespace-labels: " + err.Error()}
	}
	return o, nil
}

func parseLabels(s string) (mutate.StaticLabels, error) {
	out := mutate.StaticLabels{}
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

// runMutate runs one admission through the same handler serve uses and prints the response
// (for an AdmissionReview) or the mutated Pod (for a Pod).
func runMutate(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	o, err := parseMutate(args)
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
	req, bare, err := decodeInput(raw, o.namespace)
	if err != nil {
		return err
	}
	opts, err := resolverOptions(ctx, pol, nil)
	if err != nil {
		fmt.Fprintf(stderr, "warning: %s\n", oneLine(err.Error()))
	}
	res, err := resolve.New(opts)
	if err != nil {
		return err
	}
	h := mutate.NewHandler(mutate.Handler{Policy: staticPolicy{pol}, Resolver: res, Namespaces: o.labels})
	resp := h.Handle(ctx, admission.Request{AdmissionRequest: *req})
	if err := resp.Complete(admission.Request{AdmissionRequest: *req}); err != nil {
		return fmt.Errorf("building the response: %w", err)
	}
	if !bare {
		out, err := json.MarshalIndent(admissionv1.AdmissionReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
			Response: &resp.AdmissionResponse,
		}, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", out)
		return err
	}
	for _, w := range resp.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if !resp.Allowed {
		return fmt.Errorf("denied: %s", resp.Result.Message)
	}
	pod := req.Object.Raw
	if len(resp.Patch) > 0 {
		patch, err := jsonpatch.DecodePatch(resp.Patch)
		if err != nil {
			return fmt.Errorf("decoding our own patch: %w", err)
		}
		if pod, err = patch.Apply(pod); err != nil {
			return fmt.Errorf("applying our own patch: %w", err)
		}
	}
	out, err := yaml.JSONToYAML(pod)
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}

type staticPolicy struct{ c *policy.Compiled }

func (s staticPolicy) Current() *policy.Compiled { return s.c }

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
	data, err := io.ReadAll(io.LimitReader(r, maxInput+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if len(data) > maxInput {
		return nil, fmt.Errorf("%s is larger than %d MiB, the webhook's request limit", name, maxInput>>20)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%s is empty: expected an AdmissionReview or a Pod", name)
	}
	return data, nil
}

// decodeInput accepts an AdmissionReview (its request is used as is) or a bare Pod (wrapped in a
// CREATE request). bare reports the latter.
func decodeInput(raw []byte, namespace string) (*admissionv1.AdmissionRequest, bool, error) {
	data, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, false, fmt.Errorf("input is neither JSON nor YAML: %w", err)
	}
	var meta metav1.TypeMeta
	if err := json.Unmarshal(data, &meta); err != nil {
		return nil, false, fmt.Errorf("input is not a Kubernetes object: %w", err)
	}
	switch meta.Kind {
	case "AdmissionReview":
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(data, &review); err != nil {
			return nil, false, fmt.Errorf("input is not a valid AdmissionReview: %w", err)
		}
		if review.Request == nil {
			return nil, false, errors.New("the AdmissionReview has no request")
		}
		return review.Request, false, nil
	case "Pod":
		var pod corev1.Pod
		if err := json.Unmarshal(data, &pod); err != nil {
			return nil, false, fmt.Errorf("input is not a valid Pod: %w", err)
		}
		ns := pod.Namespace
		if ns == "" {
			ns = namespace
		}
		if ns == "" {
			ns = metav1.NamespaceDefault
		}
		return &admissionv1.AdmissionRequest{
			UID:       types.UID("pullgate-mutate"),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: ns,
			Name:      pod.Name,
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: data},
		}, true, nil
	case "":
		return nil, false, errors.New("input has no kind: expected an AdmissionReview or a Pod")
	}
	return nil, false, fmt.Errorf("input is a %s, expected an AdmissionReview or a Pod", meta.Kind)
}
