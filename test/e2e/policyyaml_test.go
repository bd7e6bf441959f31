//go:build e2e

package e2e_test

import (
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/pullgate/pullgate/test/e2e"
)

// pullgateWith starts a webhook with the default policy plus the given top-level keys (merged
// into exclude when it is a map there too), for fields the harness's Policy type does not know,
// registers it for s, and returns an opted-in enforce namespace.
func pullgateWith(t *testing.T, s e2e.Scope, extra map[string]any) string {
	t.Helper()
	var doc map[string]any
	raw, err := yaml.Marshal(env.DefaultPolicy())
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for k, v := range extra {
		if m, ok := v.(map[string]any); ok {
			if have, ok := doc[k].(map[string]any); ok {
				for kk, vv := range m {
					have[kk] = vv
				}
				continue
			}
		}
		doc[k] = v
	}
	policyYAML, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	w := env.StartWebhook(t, e2e.WebhookOptions{PolicyYAML: policyYAML, Args: []string{"--namespace", s.OwnNamespace}})
	env.Register(t, e2e.WebhookConfig("pullgate-"+s.ID, s, w.URL, w.CABundle, ""))
	return env.Namespace(t, s, "enforce")
}
