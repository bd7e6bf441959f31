package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Release is pullgate installed by its Helm chart, from its own image, on the node.
type Release struct {
	Name, Namespace string
	// Values are the values of the last install or upgrade.
	Values map[string]any
	env    *Env
}

// MirrorCredentials is the name of the dockerconfigjson Secret, in pullgate's namespace and in
// each opted-in test namespace, that holds the mirror's login.
const MirrorCredentials = "mirror-credentials"

// NodePolicy is the policy the node suite installs: the remote upstream mirrored by the
// authenticated mirror, pinned, IfNotPresent, with the mirror's pull secret injected; namespaces
// labelled pullgate-e2e/airgapped=true get imagePullPolicy Never.
func (e *Env) NodePolicy() map[string]any {
	r := e.Node.Registries
	return map[string]any{
		"mode": "Enforce",
		"mirrors": []any{map[string]any{
			"registry":          r.Remote,
			"mirror":            r.Mirror,
			"caBundle":          string(r.MirrorCA),
			"credentialsSecret": MirrorCredentials,
		}},
		"pullPolicy":       "IfNotPresent",
		"imagePullSecrets": []any{MirrorCredentials},
		"resolve":          map[string]any{"enabled": true, "timeout": "3s"},
		"rules": []any{map[string]any{
			"name":              "airgapped",
			"namespaceSelector": map[string]any{"matchLabels": map[string]any{"pullgate-e2e/airgapped": "true"}},
			"pullPolicy":        "Never",
		}},
	}
}

// InstallPullgate installs the chart (deploy/helm/pullgate) as release "pullgate" into
// pullgate-system with the node policy, pullgate's image from the infra registry and
// failurePolicy Fail, and waits until the Deployment is available and the webhook answers.
func (e *Env) InstallPullgate(ctx context.Context, extra map[string]any) (*Release, error) {
	r := &Release{Name: "pullgate", Namespace: "pullgate-system", env: e}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: r.Namespace}}
	if _, err := e.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	if err := e.CreateMirrorSecret(ctx, r.Namespace); err != nil {
		return nil, err
	}
	imgs := e.Node.Images
	if imgs.PullgateDigest == "" {
		return nil, fmt.Errorf("no pullgate image: set PULLGATE_E2E_IMAGE to the layout make image writes")
	}
	r.Values = map[string]any{
		"image":   map[string]any{"repository": imgs.PullgateRepository, "digest": imgs.PullgateDigest},
		"webhook": map[string]any{"failurePolicy": "Fail", "timeoutSeconds": 5},
		"policy":  e.NodePolicy(),
	}
	for k, v := range extra {
		r.Values[k] = v
	}
	if err := r.helm(ctx, "install"); err != nil {
		return nil, err
	}
	return r, r.WaitAvailable(ctx)
}

// Upgrade runs helm upgrade with values merged over the current ones (top-level keys replace).
func (r *Release) Upgrade(ctx context.Context, values map[string]any) error {
	for k, v := range values {
		r.Values[k] = v
	}
	return r.helm(ctx, "upgrade")
}

func (r *Release) helm(ctx context.Context, verb string) error {
	e := r.env
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	b, err := yaml.Marshal(r.Values)
	if err != nil {
		return err
	}
	dir := filepath.Join(e.Dir, "helm")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	values := filepath.Join(dir, "values.yaml")
	if err := os.WriteFile(values, b, 0o644); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.Opts.Helm, verb, r.Name, filepath.Join(root, "deploy", "helm", "pullgate"),
		"--namespace", r.Namespace, "--values", values, "--kubeconfig", e.Kubeconfig, "--wait", "--timeout", "150s")
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(dir, "cache"), "HELM_CONFIG_HOME="+filepath.Join(dir, "config"),
		"HELM_DATA_HOME="+filepath.Join(dir, "data"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("helm %s: %w\n%s", verb, err, out)
	}
	return nil
}

// Deployment returns the webhook Deployment.
func (r *Release) Deployment(ctx context.Context) (*appsv1.Deployment, error) {
	return r.env.Client.AppsV1().Deployments(r.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
}

// WaitAvailable waits until the Deployment has rolled out completely: every replica updated,
// ready and no old one left.
func (r *Release) WaitAvailable(ctx context.Context) error {
	var last string
	err := Poll(ctx, 3*time.Minute, func(ctx context.Context) (bool, error) {
		d, err := r.Deployment(ctx)
		if err != nil {
			return false, err
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		s := d.Status
		last = fmt.Sprintf("generation %d/%d, replicas %d, updated %d, ready %d, available %d (want %d)",
			s.ObservedGeneration, d.Generation, s.Replicas, s.UpdatedReplicas, s.ReadyReplicas, s.AvailableReplicas, want)
		return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.Replicas == want &&
			s.AvailableReplicas == want, nil
	})
	if err != nil {
		return fmt.Errorf("pullgate Deployment not rolled out: %s: %w", last, err)
	}
	return nil
}

// CreateMirrorSecret creates the mirror's login as a dockerconfigjson Secret in ns.
func (e *Env) CreateMirrorSecret(ctx context.Context, ns string) error {
	r := e.Node.Registries
	auth := base64.StdEncoding.EncodeToString([]byte(r.MirrorUser + ":" + r.MirrorPassword))
	cfg, err := json.Marshal(map[string]any{"auths": map[string]any{r.Mirror: map[string]string{"auth": auth}}})
	if err != nil {
		return err
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: MirrorCredentials, Namespace: ns},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: cfg},
	}
	_, err = e.Client.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// SaveLogs writes the logs of every pod in ns into Dir/pods, for a failed run.
func (e *Env) SaveLogs(ctx context.Context, ns string) {
	pods, err := e.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: list pods in %s: %v\n", ns, err)
		return
	}
	dir := filepath.Join(e.Dir, "pods")
	_ = os.MkdirAll(dir, 0o755)
	for _, p := range pods.Items {
		for _, c := range p.Spec.Containers {
			b, err := e.Client.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: c.Name}).DoRaw(ctx)
			if err != nil {
				b = []byte(err.Error())
			}
			name := strings.Join([]string{ns, p.Name, c.Name}, "_") + ".log"
			_ = os.WriteFile(filepath.Join(dir, name), b, 0o644)
		}
	}
}
