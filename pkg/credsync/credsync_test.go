package credsync_test

import (
	"context"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/pullgate/pullgate/pkg/credsync"
	"github.com/pullgate/pullgate/pkg/policy"
)

const syncPolicy = `apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors:
  - registry: docker.io
    mirror: harbor.example.com/dockerhub
    credentialsSecret: harbor-robot
imagePullSecrets: [harbor-pull]
exclude:
  namespaces: [legacy]
syncCredentials:
  - from: harbor-robot
    to: harbor-pull
`

func source(data string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "pullgate", Name: "harbor-robot"},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(data)},
	}
}

func ns(name, mode string) *corev1.Namespace {
	n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if mode != "" {
		n.Labels = map[string]string{policy.ModeLabel: mode}
	}
	return n
}

// The syncer copies the mirror's credentials into opted-in namespaces only, follows a rotation,
// removes its copy on opt-out, and never touches a namespace owner's Secret of the same name.
func TestSyncer(t *testing.T) {
	t.Parallel()
	pol, err := policy.Check([]byte(syncPolicy))
	if err != nil {
		t.Fatal(err)
	}
	owned := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "theirs", Name: "harbor-pull"}, Data: map[string][]byte{"x": []byte("mine")}}
	kube := fake.NewClientset(source(`{"auths":{"a":{}}}`), owned,
		ns("pullgate", "enforce"), ns("apps", "enforce"), ns("dev", "audit"), ns("other", ""), ns("legacy", "enforce"), ns("theirs", "enforce"))
	s := &credsync.Syncer{Kube: kube, Policy: staticPolicy{pol}, Namespace: "pullgate", Log: logr.Discard()}
	ctx := context.Background()
	list := func(labels.Selector) ([]*corev1.Namespace, error) {
		l, err := kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		out := make([]*corev1.Namespace, len(l.Items))
		for i := range l.Items {
			out[i] = &l.Items[i]
		}
		return out, nil
	}
	copyIn := func(namespace string) *corev1.Secret {
		got, err := kube.CoreV1().Secrets(namespace).Get(ctx, "harbor-pull", metav1.GetOptions{})
		if err != nil {
			return nil
		}
		return got
	}
	if err := s.SyncAll(ctx, list); err != nil {
		t.Fatal(err)
	}
	for namespace, want := range map[string]bool{"apps": true, "dev": true, "other": false, "legacy": false, "pullgate": false} {
		if got := copyIn(namespace); (got != nil) != want {
			t.Errorf("%s: copy %v, want %v", namespace, got != nil, want)
		} else if got != nil && (got.Type != corev1.SecretTypeDockerConfigJson || string(got.Data[corev1.DockerConfigJsonKey]) != `{"auths":{"a":{}}}` || got.Labels[credsync.ManagedByLabel] != credsync.ManagedBy) {
			t.Errorf("%s: copy %+v", namespace, got)
		}
	}
	if got := copyIn("theirs"); string(got.Data["x"]) != "mine" || got.Labels[credsync.ManagedByLabel] != "" {
		t.Errorf("a namespace owner's Secret was changed: %+v", got)
	}

	// Rotation: the source changes, the copies follow.
	if _, err := kube.CoreV1().Secrets("pullgate").Update(ctx, source(`{"auths":{"b":{}}}`), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Opt-out: the label goes, the copy goes.
	if _, err := kube.CoreV1().Namespaces().Update(ctx, ns("dev", ""), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.SyncAll(ctx, list); err != nil {
		t.Fatal(err)
	}
	if got := copyIn("apps"); got == nil || string(got.Data[corev1.DockerConfigJsonKey]) != `{"auths":{"b":{}}}` {
		t.Errorf("after rotation: %+v", got)
	}
	if got := copyIn("dev"); got != nil {
		t.Errorf("after opt-out the copy is still there: %+v", got)
	}
	// Level: a second pass changes nothing.
	before := len(kube.Actions())
	if err := s.SyncAll(ctx, list); err != nil {
		t.Fatal(err)
	}
	for _, a := range kube.Actions()[before:] {
		if v := a.GetVerb(); v != "get" && v != "list" {
			t.Errorf("a level pass wrote: %s %s", v, a.GetResource().Resource)
		}
	}
}

type staticPolicy struct{ p *policy.Compiled }

func (m staticPolicy) Current() *policy.Compiled { return m.p }
