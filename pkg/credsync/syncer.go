package credsync

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/pullgate/pullgate/internal/promreg"
	"github.com/pullgate/pullgate/pkg/policy"
)

// PolicySource hands out the policy in force.
type PolicySource interface {
	Current() *policy.Compiled
}

var syncsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "pullgate_credential_sync_total",
	Help: "Credential copies created, updated and deleted in opted-in namespaces, and failures, by verb and outcome.",
}, []string{"verb", "outcome"})

// RegisterMetrics adds the syncer's counter to reg.
func RegisterMetrics(reg prometheus.Registerer) error {
	return promreg.Register(reg, "credential sync", syncsTotal)
}

// Syncer keeps the copies level: on every namespace change and every Interval (a rotated
// source is copied within it), it reads each namespace's copies by name and applies Plan. It
// asks for Secrets by name only, so its RBAC names them (get/update/delete by resourceNames;
// create cannot be limited by name). Run on the leader only.
type Syncer struct {
	Kube      kubernetes.Interface
	Policy    PolicySource
	Namespace string // pullgate's own: where the sources live
	Interval  time.Duration
	Log       logr.Logger
}

// NeedLeaderElection is true: one replica writes.
func (s *Syncer) NeedLeaderElection() bool { return true }

// Start runs until ctx ends.
func (s *Syncer) Start(ctx context.Context) error {
	factory := informers.NewSharedInformerFactory(s.Kube, 0)
	nsInf := factory.Core().V1().Namespaces()
	kick := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	if _, err := nsInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: poke, UpdateFunc: func(_, o any) { poke(o) }, DeleteFunc: poke,
	}); err != nil {
		return fmt.Errorf("credential sync: %w", err)
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), nsInf.Informer().HasSynced) {
		return nil
	}
	ticker := time.NewTicker(s.Interval)
	defer ticker.Stop()
	for {
		if err := s.SyncAll(ctx, nsInf.Lister().List); err != nil {
			s.Log.Error(err, "Credential sync incomplete; retried at the next change or tick")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
			// A burst of namespace events (a new namespace is created, then labelled) is one pass.
			time.Sleep(time.Second)
		case <-ticker.C:
		}
	}
}

// SyncAll plans and applies every namespace once.
func (s *Syncer) SyncAll(ctx context.Context, list func(labels.Selector) ([]*corev1.Namespace, error)) error {
	pol := s.Policy.Current()
	if pol == nil || len(pol.SyncCredentials()) == 0 {
		return nil
	}
	namespaces, err := list(labels.Everything())
	if err != nil {
		return fmt.Errorf("listing namespaces: %w", err)
	}
	sources := map[string]*corev1.Secret{}
	var errs []error
	for _, sc := range pol.SyncCredentials() {
		src, err := s.Kube.CoreV1().Secrets(s.Namespace).Get(ctx, sc.From, metav1.GetOptions{})
		if err != nil {
			errs = append(errs, fmt.Errorf("reading source %s/%s: %w", s.Namespace, sc.From, err))
			continue
		}
		sources[sc.From] = src
	}
	for _, ns := range namespaces {
		if ns.DeletionTimestamp != nil {
			continue
		}
		errs = append(errs, s.syncNamespace(ctx, pol, ns, sources))
	}
	return errors.Join(errs...)
}

func (s *Syncer) syncNamespace(ctx context.Context, pol *policy.Compiled, ns *corev1.Namespace, sources map[string]*corev1.Secret) error {
	secrets := s.Kube.CoreV1().Secrets(ns.Name)
	existing := map[string]*corev1.Secret{}
	for _, sc := range pol.SyncCredentials() {
		got, err := secrets.Get(ctx, sc.Target(), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return fmt.Errorf("reading %s/%s: %w", ns.Name, sc.Target(), err)
		default:
			existing[sc.Target()] = got
		}
	}
	var errs []error
	for _, a := range Plan(pol, OptedIn(pol, s.Namespace, ns.Name, ns.Labels), ns.Name, sources, existing) {
		var err error
		switch a.Verb {
		case Create:
			_, err = secrets.Create(ctx, a.Secret, metav1.CreateOptions{FieldManager: "pullgate"})
		case Update:
			_, err = secrets.Update(ctx, a.Secret, metav1.UpdateOptions{FieldManager: "pullgate"})
		case Delete:
			err = secrets.Delete(ctx, a.Secret.Name, metav1.DeleteOptions{})
		}
		outcome := "ok"
		if err != nil {
			outcome = "error"
			errs = append(errs, fmt.Errorf("%s %s/%s: %w", a.Verb, ns.Name, a.Secret.Name, err))
		} else {
			s.Log.V(1).Info("Credential copy", "verb", a.Verb, "namespace", ns.Name, "secret", a.Secret.Name)
		}
		syncsTotal.WithLabelValues(a.Verb, outcome).Inc()
	}
	return errors.Join(errs...)
}
