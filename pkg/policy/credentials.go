package policy

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// SyncCredential asks the controller to keep a copy of a mirror's credential Secret in every
// opted-in namespace, so that the pull secret pullgate injects exists there. Off unless listed:
// it puts the mirror's credentials in every such namespace, readable by whoever may read
// Secrets there, which is what "don't share registry credentials cluster-wide" warns against;
// a read-only robot account per mirror limits what a leak costs.
type SyncCredential struct {
	// From is a mirror's or listed registry's credentialsSecret, in pullgate's namespace.
	From string `json:"from"`
	// To is the copy's name in each namespace (default From); it must be a pull secret the policy
	// injects (imagePullSecrets or rules[].imagePullSecrets), or the copy would serve no pod.
	To string `json:"to,omitempty"`
}

// Target is the copy's name.
func (s SyncCredential) Target() string {
	if s.To != "" {
		return s.To
	}
	return s.From
}

func validateSyncCredentials(fld *field.Path, p *Policy) field.ErrorList {
	var errs field.ErrorList
	var sources []string
	for _, m := range p.Mirrors {
		sources = append(sources, m.CredentialsSecret)
	}
	for _, r := range p.Registries {
		sources = append(sources, r.CredentialsSecret)
	}
	injected := slices.Clone(p.ImagePullSecrets)
	for _, r := range p.Rules {
		injected = append(injected, r.ImagePullSecrets...)
	}
	targets := map[string]int{}
	for i, s := range p.SyncCredentials {
		f := fld.Index(i)
		switch {
		case s.From == "":
			errs = append(errs, field.Required(f.Child("from"), "a mirror's credentialsSecret"))
		case !slices.Contains(sources, s.From):
			errs = append(errs, field.Invalid(f.Child("from"), s.From, "is the credentialsSecret of no mirror or registry; only those are copied"))
		}
		if s.To != "" {
			if msgs := validation.IsDNS1123Subdomain(s.To); len(msgs) > 0 {
				errs = append(errs, field.Invalid(f.Child("to"), s.To, strings.Join(msgs, "; ")))
			}
		}
		t := s.Target()
		if t == "" {
			continue
		}
		if j, dup := targets[t]; dup {
			errs = append(errs, field.Duplicate(f.Child("to"), fmt.Sprintf("%s (same copy as syncCredentials[%d])", t, j)))
		}
		targets[t] = i
		if !slices.Contains(injected, t) {
			errs = append(errs, field.Invalid(f.Child("to"), t, "is injected into no pod: list it under imagePullSecrets or rules[].imagePullSecrets"))
		}
	}
	return errs
}

// SyncCredentials lists the credential Secrets the controller copies into opted-in namespaces.
func (c *Compiled) SyncCredentials() []SyncCredential {
	return slices.Clone(c.policy.SyncCredentials)
}
