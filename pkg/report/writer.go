package report

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/go-logr/logr"
	openreports "github.com/openreports/reports-api/apis/openreports.io/v1alpha1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
)

// APIs a Writer may write, in order of preference.
const (
	APIOpenReports = "openreports.io/v1alpha1"
	APIPolicyCRD   = "wgpolicyk8s.io/v1alpha2"
)

// ErrNoReportAPI says neither report API is served.
var ErrNoReportAPI = errors.New("neither openreports.io/v1alpha1 nor wgpolicyk8s.io/v1alpha2 is served: no reports are written (install either CRD set)")

// Writer puts reports in the cluster in whichever format is served. The wgpolicyk8s.io objects
// have the openreports fields but source and configuration (openreports.io grew out of them), so
// one set of types serves both and the product needs no module of Kyverno's.
type Writer struct {
	Dynamic   dynamic.Interface
	Discovery discovery.DiscoveryInterface
	Log       logr.Logger

	mu   sync.Mutex
	last string // the API of the last write, or noAPI, to log a change once
}

// noAPI is Writer.last when neither report API was served.
const noAPI = "none"

// Stats are what one Write did.
type Stats struct {
	API                         string
	Written, Unchanged, Deleted int
}

type kinds struct{ ns, cluster schema.GroupVersionResource }

func (w *Writer) api() (string, kinds, error) {
	for _, gv := range []string{APIOpenReports, APIPolicyCRD} {
		_, err := w.Discovery.ServerResourcesForGroupVersion(gv)
		switch {
		case err == nil:
			g, _ := schema.ParseGroupVersion(gv)
			if gv == APIOpenReports {
				return gv, kinds{g.WithResource("reports"), g.WithResource("clusterreports")}, nil
			}
			return gv, kinds{g.WithResource("policyreports"), g.WithResource("clusterpolicyreports")}, nil
		case apierrors.IsNotFound(err):
			continue
		default:
			return "", kinds{}, fmt.Errorf("discovering %s: %w", gv, err)
		}
	}
	return "", kinds{}, ErrNoReportAPI
}

// Write creates, updates or deletes pullgate's reports so the cluster holds exactly these; an
// object whose content has not changed is not written.
func (w *Writer) Write(ctx context.Context, reports []openreports.Report, cluster openreports.ClusterReport) (Stats, error) {
	api, k, err := w.api()
	// Which API is written, or that none is served, is logged when it changes, not every scan;
	// other errors are the caller's to log.
	state := api
	if errors.Is(err, ErrNoReportAPI) {
		state = noAPI
	}
	w.mu.Lock()
	if state != "" && state != w.last {
		if state == noAPI {
			w.Log.Info("Reports not written", "reason", err.Error())
		} else {
			w.Log.Info("Writing reports", "api", api)
		}
		w.last = state
	}
	w.mu.Unlock()
	if err != nil {
		return Stats{}, err
	}
	st := Stats{API: api}
	existing, err := w.Dynamic.Resource(k.ns).Namespace(metav1.NamespaceAll).List(ctx, metav1.ListOptions{LabelSelector: ManagedByLabel + "=" + ManagedBy})
	if err != nil {
		return st, fmt.Errorf("listing reports: %w", err)
	}
	have := map[string]*unstructured.Unstructured{}
	for i := range existing.Items {
		have[existing.Items[i].GetNamespace()] = &existing.Items[i]
	}
	for i := range reports {
		u, err := toObject(&reports[i], api, "PolicyReport")
		if err != nil {
			return st, err
		}
		prev := have[reports[i].Namespace]
		delete(have, reports[i].Namespace)
		if err := w.put(ctx, w.Dynamic.Resource(k.ns).Namespace(reports[i].Namespace), u, prev, &st); err != nil {
			return st, err
		}
	}
	for ns, old := range have {
		if old.GetName() != Name {
			continue
		}
		if err := w.Dynamic.Resource(k.ns).Namespace(ns).Delete(ctx, Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return st, fmt.Errorf("deleting the report of %s: %w", ns, err)
		}
		st.Deleted++
	}
	cu, err := toObject(&cluster, api, "ClusterPolicyReport")
	if err != nil {
		return st, err
	}
	prev, err := w.Dynamic.Resource(k.cluster).Get(ctx, Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		prev, err = nil, nil
	}
	if err != nil {
		return st, fmt.Errorf("reading the cluster report: %w", err)
	}
	return st, w.put(ctx, w.Dynamic.Resource(k.cluster), cu, prev, &st)
}

func (w *Writer) put(ctx context.Context, c dynamic.ResourceInterface, u, prev *unstructured.Unstructured, st *Stats) error {
	if prev == nil {
		if _, err := c.Create(ctx, u, metav1.CreateOptions{FieldManager: ManagedBy}); err != nil {
			return fmt.Errorf("creating %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
		st.Written++
		return nil
	}
	if prev.GetAnnotations()[ContentAnnotation] == u.GetAnnotations()[ContentAnnotation] {
		st.Unchanged++
		return nil
	}
	u.SetResourceVersion(prev.GetResourceVersion())
	if _, err := c.Update(ctx, u, metav1.UpdateOptions{FieldManager: ManagedBy}); err != nil {
		return fmt.Errorf("updating %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	st.Written++
	return nil
}

// toObject is the report as an object of the API: openreports as it is, or wgpolicyk8s.
func toObject(obj any, api, policyKind string) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("converting a report: %w", err)
	}
	u := &unstructured.Unstructured{Object: m}
	if api == APIPolicyCRD {
		delete(m, "source")
		delete(m, "configuration")
		u.SetAPIVersion(APIPolicyCRD)
		u.SetKind(policyKind)
	}
	unstructured.RemoveNestedField(m, "metadata", "creationTimestamp")
	return u, nil
}
