package credsync

import (
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullgate/pullgate/pkg/policy"
)

// Labels on every copy: only Secrets carrying them are ever updated or deleted, so a Secret of
// the same name that a namespace owner made stays theirs.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedBy      = "pullgate"
	// SourceAnnotation names the Secret in pullgate's namespace the copy comes from.
	SourceAnnotation = "pullgate.dev/credentials-from"
)

// Verbs of an Action.
const (
	Create = "create"
	Update = "update"
	Delete = "delete"
)

// Action is one change to make in a namespace.
type Action struct {
	Verb   string
	Secret *corev1.Secret // the desired copy; for Delete, only its namespace and name
}

// OptedIn reports whether a namespace gets copies: labelled pullgate.dev/mode enforce or audit
// (the webhook's opt-in), not excluded by the policy, and not pullgate's own.
func OptedIn(pol *policy.Compiled, own, namespace string, labels map[string]string) bool {
	switch strings.ToLower(labels[policy.ModeLabel]) {
	case "enforce", "audit":
	default:
		return false
	}
	return namespace != own && !pol.Decide(namespace, labels, nil).Excluded
}

// Plan returns what to change in one namespace. sources are the Secrets in pullgate's namespace
// by name (absent: not readable, so nothing is created or changed from it); existing are the
// Secrets in the namespace by name, nil when absent.
func Plan(pol *policy.Compiled, optedIn bool, namespace string, sources, existing map[string]*corev1.Secret) []Action {
	var out []Action
	for _, s := range pol.SyncCredentials() {
		name := s.Target()
		have := existing[name]
		ours := have != nil && have.Labels[ManagedByLabel] == ManagedBy
		if !optedIn {
			if ours {
				out = append(out, Action{Verb: Delete, Secret: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}})
			}
			continue
		}
		src := sources[s.From]
		if src == nil || (have != nil && !ours) {
			continue // nothing to copy from; or a namespace owner's own Secret, never overwritten
		}
		want := copyOf(src, namespace, name)
		switch {
		case have == nil:
			out = append(out, Action{Verb: Create, Secret: want})
		case have.Type != want.Type || !maps.EqualFunc(have.Data, want.Data, func(a, b []byte) bool { return string(a) == string(b) }) ||
			have.Annotations[SourceAnnotation] != s.From:
			want.ResourceVersion = have.ResourceVersion
			out = append(out, Action{Verb: Update, Secret: want})
		}
	}
	return out
}

func copyOf(src *corev1.Secret, namespace, name string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   namespace,
			Name:        name,
			Labels:      map[string]string{ManagedByLabel: ManagedBy},
			Annotations: map[string]string{SourceAnnotation: src.Name},
		},
		Type: src.Type,
		Data: maps.Clone(src.Data),
	}
}
