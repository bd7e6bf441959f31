package chart

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
	"helm.sh/helm/v3/pkg/releaseutil"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Path is the chart's directory relative to the repository root.
const Path = "deploy/helm/pullgate"

// Options are what `helm template` takes. Zero values mean release "pullgate" in namespace
// "pullgate-system" for Kubernetes v1.37.2 with the chart's default values.
type Options struct {
	ReleaseName string
	Namespace   string
	KubeVersion string
	ValueFiles  []string // -f, in order
	Set         []string // --set key=value
}

// Scheme knows every kind the chart may render: the built-in API, cert-manager's Issuer and
// Certificate, and prometheus-operator's ServiceMonitor. A kind outside it fails Decode.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(cmapi.AddToScheme(s))
	utilruntime.Must(monitoringv1.AddToScheme(s))
	return s
}

// Dir finds the chart by walking up from the working directory to the repository root, so it
// works from any package of the test module.
func Dir() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, Path, "Chart.yaml")); err == nil {
			return filepath.Join(d, Path), nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no %s above %s", Path, wd)
		}
	}
}

// Manifest renders the chart client-side, as `helm template` does: values merged over the
// chart's defaults, checked against values.schema.json, templates executed (including their
// `fail` checks), objects sorted in install order. Notes and hooks are not part of it.
func Manifest(o Options) (string, error) {
	dir, err := Dir()
	if err != nil {
		return "", err
	}
	chrt, err := loader.Load(dir)
	if err != nil {
		return "", fmt.Errorf("load chart: %w", err)
	}
	vals, err := (&values.Options{ValueFiles: o.ValueFiles, Values: o.Set}).MergeValues(getter.Providers{})
	if err != nil {
		return "", fmt.Errorf("values: %w", err)
	}
	kv, err := chartutil.ParseKubeVersion(orDefault(o.KubeVersion, "v1.37.2"))
	if err != nil {
		return "", err
	}
	install := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	install.ClientOnly = true
	install.DryRun = true
	install.Replace = true // a client-only install never checks for an existing release
	install.ReleaseName = orDefault(o.ReleaseName, "pullgate")
	install.Namespace = orDefault(o.Namespace, "pullgate-system")
	install.KubeVersion = kv
	rel, err := install.Run(chrt, vals)
	if err != nil {
		return "", fmt.Errorf("render: %w", err)
	}
	return rel.Manifest, nil
}

// Render renders the chart and decodes every object strictly (see Decode).
func Render(o Options) ([]client.Object, error) {
	m, err := Manifest(o)
	if err != nil {
		return nil, err
	}
	return Decode(m)
}

// Decode turns a multi-document manifest into typed objects. Decoding is strict: a field the Go
// type does not know, a duplicate field or an unregistered kind is an error, because the API
// server would drop or reject it.
func Decode(manifest string) ([]client.Object, error) {
	deser := serializer.NewCodecFactory(Scheme(), serializer.EnableStrict).UniversalDeserializer()
	docs := releaseutil.SplitManifests(manifest)
	var objs []client.Object
	var errs []error
	for _, key := range sortedKeys(docs) {
		doc := docs[key]
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		obj, gvk, err := deser.Decode([]byte(doc), nil, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", source(doc), err))
			continue
		}
		co, ok := obj.(client.Object)
		if !ok {
			errs = append(errs, fmt.Errorf("%s: %s is not an object", source(doc), gvk))
			continue
		}
		co.GetObjectKind().SetGroupVersionKind(*gvk)
		objs = append(objs, co)
	}
	return objs, errors.Join(errs...)
}

// sortedKeys keeps the manifest's order: SplitManifests names documents manifest-0, manifest-1...
func sortedKeys(m map[string]string) []string {
	keys := make([]string, len(m))
	for i := range keys {
		keys[i] = fmt.Sprintf("manifest-%d", i)
	}
	return keys
}

func stripComments(doc string) string {
	var b strings.Builder
	for line := range strings.Lines(doc) {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// source returns the "# Source: pullgate/templates/x.yaml" line Helm puts above each object.
func source(doc string) string {
	for line := range strings.Lines(doc) {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "# Source: "); ok {
			return s
		}
	}
	return "object"
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
