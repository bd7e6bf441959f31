package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// InstallRelease installs the chart as another release, name in namespace ns (created, with the
// mirror's login), with values over pullgate's image; it waits as helm install --wait does.
func (e *Env) InstallRelease(ctx context.Context, name, ns string, values map[string]any) (*Release, error) {
	r := &Release{Name: name, Namespace: ns, env: e, Values: map[string]any{
		"image": map[string]any{"repository": e.Node.Images.PullgateRepository, "digest": e.Node.Images.PullgateDigest},
	}}
	if _, err := e.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, err
	}
	if err := e.CreateMirrorSecret(ctx, ns); err != nil {
		return nil, err
	}
	for k, v := range values {
		r.Values[k] = v
	}
	if err := r.helm(ctx, "install"); err != nil {
		return nil, err
	}
	return r, nil
}

// Uninstall runs helm uninstall --wait on the release.
func (r *Release) Uninstall(ctx context.Context) error {
	e := r.env
	dir := filepath.Join(e.Dir, "helm")
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.Opts.Helm, "uninstall", r.Name, "--namespace", r.Namespace, "--kubeconfig", e.Kubeconfig, "--wait", "--timeout", "150s")
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(dir, "cache"), "HELM_CONFIG_HOME="+filepath.Join(dir, "config"),
		"HELM_DATA_HOME="+filepath.Join(dir, "data"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("helm uninstall %s: %w\n%s", r.Name, err, out)
	}
	return nil
}
