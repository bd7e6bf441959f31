package e2e

import (
	"fmt"
	"os"
	"path/filepath"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Policy mirrors pullgate's policy file (apiVersion pullgate.dev/v1alpha1, kind Policy). It is
// declared here rather than imported from pkg/policy on purpose: the suite checks the file format
// users write, so a renamed field in the Go types must break these tests, not silently follow.
type Policy struct {
	APIVersion       string       `json:"apiVersion"`
	Kind             string       `json:"kind"`
	Mode             string       `json:"mode,omitempty"`
	Mirrors          []Mirror     `json:"mirrors,omitempty"`
	Registries       []Registry   `json:"registries,omitempty"`
	Resolve          *Resolve     `json:"resolve,omitempty"`
	PullPolicy       string       `json:"pullPolicy,omitempty"`
	ImagePullSecrets []string     `json:"imagePullSecrets,omitempty"`
	Exclude          *Exclude     `json:"exclude,omitempty"`
	Rules            []PolicyRule `json:"rules,omitempty"`
}

// Mirror maps an upstream registry host to a mirror host[:port][/path-prefix].
type Mirror struct {
	Registry string `json:"registry"`
	Mirror   string `json:"mirror"`
	Insecure bool   `json:"insecure,omitempty"`
}

// Registry lists a registry pullgate may resolve against directly, with how to reach it.
type Registry struct {
	Host     string `json:"host"`
	Insecure bool   `json:"insecure,omitempty"`
}

// Resolve configures tag-to-digest pinning.
type Resolve struct {
	Enabled            bool   `json:"enabled"`
	Timeout            string `json:"timeout,omitempty"`
	CacheTTL           string `json:"cacheTTL,omitempty"`
	OnError            string `json:"onError,omitempty"`
	FallbackToUpstream bool   `json:"fallbackToUpstream,omitempty"`
	VerifyDigest       bool   `json:"verifyDigest,omitempty"`
}

// Exclude lists namespaces and image globs pullgate leaves alone.
type Exclude struct {
	Namespaces []string `json:"namespaces,omitempty"`
	Images     []string `json:"images,omitempty"`
}

// PolicyRule overrides the defaults for namespaces matching its selector.
type PolicyRule struct {
	Name              string                `json:"name"`
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	PullPolicy        string                `json:"pullPolicy,omitempty"`
	ImagePullSecrets  []string              `json:"imagePullSecrets,omitempty"`
}

// Well-known values used by the suite.
const (
	ModeLabel    = "pullgate.dev/mode"
	MirrorSecret = "mirror-pull"
	WebhookName  = "pods.pullgate.dev"
	MutatePath   = "/mutate-v1-pod"
	PauseImage   = "registry.k8s.io/pause:3.10"
	defaultTTL   = "5m"
	// WebhookTimeoutSeconds is the chart's timeoutSeconds: the API server gives up on a call to
	// pullgate after this long.
	WebhookTimeoutSeconds = 5
)

// DefaultPolicy is the policy most tests start from: the upstream mirrored to the Distribution
// mirror, pinning on with a 2s budget and onError Keep, IfNotPresent, the mirror pull secret,
// kube-system and the pause image excluded.
func (e *Env) DefaultPolicy() Policy {
	return Policy{
		APIVersion: "pullgate.dev/v1alpha1",
		Kind:       "Policy",
		Mode:       "Enforce",
		Mirrors:    []Mirror{{Registry: e.Upstream, Mirror: e.Mirror, Insecure: true}},
		// The upstream is plain HTTP on 127.0.0.1: listed, so fallbackToUpstream may reach it.
		Registries: []Registry{{Host: e.Upstream, Insecure: true}},
		Resolve:    &Resolve{Enabled: true, Timeout: "2s", CacheTTL: defaultTTL, OnError: "Keep"},
		PullPolicy: "IfNotPresent",
		ImagePullSecrets: []string{
			MirrorSecret,
		},
		Exclude: &Exclude{
			Namespaces: []string{metav1.NamespaceSystem},
			Images:     []string{"registry.k8s.io/pause:*"},
		},
	}
}

// WritePolicy writes p as YAML to path (truncate and write in place).
func WritePolicy(path string, p Policy) error {
	b, err := yaml.Marshal(p)
	if err != nil {
		return fmt.Errorf("marshal policy: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write policy: %w", err)
	}
	return nil
}

// ConfigMapPolicy lays a policy file out the way the kubelet projects a ConfigMap volume:
// Path is <dir>/policy.yaml -> ..data/policy.yaml, and ..data -> ..<generation>. Update writes
// a new generation and flips ..data with a rename, so the file at Path is replaced without ever
// being written to; a watcher on Path itself sees nothing but a symlink target change.
type ConfigMapPolicy struct {
	Dir, Path string
	gen       int
}

// NewConfigMapPolicy creates the layout in dir with p as the first generation.
func NewConfigMapPolicy(dir string, p Policy) (*ConfigMapPolicy, error) {
	c := &ConfigMapPolicy{Dir: dir, Path: filepath.Join(dir, "policy.yaml")}
	if err := c.Update(p); err != nil {
		return nil, err
	}
	if err := os.Symlink(filepath.Join("..data", "policy.yaml"), c.Path); err != nil {
		return nil, fmt.Errorf("link policy.yaml: %w", err)
	}
	return c, nil
}

// Update publishes p as a new generation, atomically.
func (c *ConfigMapPolicy) Update(p Policy) error {
	c.gen++
	gen := fmt.Sprintf("..gen-%d", c.gen)
	if err := os.Mkdir(filepath.Join(c.Dir, gen), 0o755); err != nil {
		return fmt.Errorf("create generation: %w", err)
	}
	if err := WritePolicy(filepath.Join(c.Dir, gen, "policy.yaml"), p); err != nil {
		return err
	}
	tmp := filepath.Join(c.Dir, "..data_tmp")
	if err := os.Symlink(gen, tmp); err != nil {
		return fmt.Errorf("link generation: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(c.Dir, "..data")); err != nil {
		return fmt.Errorf("flip ..data: %w", err)
	}
	if c.gen > 1 {
		if err := os.RemoveAll(filepath.Join(c.Dir, fmt.Sprintf("..gen-%d", c.gen-1))); err != nil {
			return fmt.Errorf("remove old generation: %w", err)
		}
	}
	return nil
}
