package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Scope isolates one test on the shared API server: the namespaces it creates carry Label, and
// the webhook configurations it registers select only namespaces with Label.
type Scope struct {
	// ID is short, unique and DNS-safe; use it in object names.
	ID string
	// Label is the label key ("e2e.pullgate.dev/<ID>").
	Label string
	// OwnNamespace is pullgate's own namespace in this scope ("pullgate-<ID>"): Pullgate starts
	// the webhook with --namespace set to it, and WebhookConfig excludes it by name, as the chart
	// excludes the release namespace. Create it with Env.CreateOwnNamespace.
	OwnNamespace string
}

// NewScope returns a fresh scope for t.
func NewScope(t testing.TB) Scope {
	t.Helper()
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	id := sanitize(strings.TrimPrefix(t.Name(), "Test"), 40, '-') + "-" + hex.EncodeToString(b[:])
	id = strings.TrimLeft(id, "-")
	return Scope{ID: id, Label: "e2e.pullgate.dev/" + id, OwnNamespace: "pullgate-" + id}
}

// Namespace creates a namespace in scope s. mode is the pullgate.dev/mode label value, "" for
// none. Namespaces are not deleted: without a controller-manager they would stay Terminating
// anyway, and the API server is thrown away with the suite.
func (e *Env) Namespace(t testing.TB, s Scope, mode string) string {
	t.Helper()
	labels := map[string]string{s.Label: "true"}
	if mode != "" {
		labels[ModeLabel] = mode
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-", Labels: labels}}
	out, err := e.Client.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	// The pull secret the suite's policy injects exists, as in a namespace set up for
	// pullgate; otherwise every admission also warns that it is missing.
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: MirrorSecret},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{}}`)},
	}
	if _, err := e.Client.CoreV1().Secrets(out.Name).Create(t.Context(), secret, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pull secret in %s: %v", out.Name, err)
	}
	return out.Name
}

// CreateOwnNamespace creates s.OwnNamespace with the scope's label and, unless mode is "", the
// pullgate.dev/mode label: what an admin who labels every namespace would do.
func (e *Env) CreateOwnNamespace(t testing.TB, s Scope, mode string) string {
	t.Helper()
	labels := map[string]string{s.Label: "true"}
	if mode != "" {
		labels[ModeLabel] = mode
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.OwnNamespace, Labels: labels}}
	if _, err := e.Client.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", s.OwnNamespace, err)
	}
	return s.OwnNamespace
}

// LabelNamespace merges labels into an existing namespace (a nil value removes the key) and
// restores the previous values when t ends. For kube-system, which a test cannot create.
func (e *Env) LabelNamespace(t testing.TB, ns string, labels map[string]*string) {
	t.Helper()
	api := e.Client.CoreV1().Namespaces()
	before, err := api.Get(t.Context(), ns, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get namespace %s: %v", ns, err)
	}
	restore := map[string]*string{}
	for k := range labels {
		if v, ok := before.Labels[k]; ok {
			restore[k] = &v
		} else {
			restore[k] = nil
		}
	}
	patch := func(ctx context.Context, l map[string]*string) error {
		b, err := jsonMarshal(map[string]any{"metadata": map[string]any{"labels": l}})
		if err != nil {
			return err
		}
		_, err = api.Patch(ctx, ns, "application/merge-patch+json", b, metav1.PatchOptions{})
		return err
	}
	if err := patch(t.Context(), labels); err != nil {
		t.Fatalf("label namespace %s: %v", ns, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := patch(ctx, restore); err != nil {
			t.Errorf("restore labels of namespace %s: %v", ns, err)
		}
	})
}

// NewPod is a pod with one container per image, named c0, c1, ... It is never scheduled: the
// suite has no scheduler or kubelet, admission is all it exercises.
func NewPod(name string, images ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for i, img := range images {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: img})
	}
	return p
}

// Warnings collects the warning headers a client receives.
type Warnings struct {
	mu   sync.Mutex
	list []string
}

var _ rest.WarningHandler = (*Warnings)(nil)

// HandleWarningHeader implements rest.WarningHandler.
func (w *Warnings) HandleWarningHeader(code int, agent, text string) {
	if code != 299 || text == "" {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

// Take returns the warnings received since the last Take and forgets them.
func (w *Warnings) Take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.list
	w.list = nil
	return out
}

// ClientWithWarnings is an admin client whose warnings land in the returned collector. Use one
// per goroutine: the collector does not tell requests apart.
func (e *Env) ClientWithWarnings() (kubernetes.Interface, *Warnings) {
	return e.clientWithWarnings()
}

// DryRun creates pod in ns with dryRun=All and returns what the API server would have stored,
// with the warnings it sent. Nothing is persisted.
func (e *Env) DryRun(ctx context.Context, ns string, pod *corev1.Pod) (*corev1.Pod, []string, error) {
	c, w := e.clientWithWarnings()
	out, err := c.CoreV1().Pods(ns).Create(ctx, pod.DeepCopy(), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	return out, w.Take(), err
}

func (e *Env) clientWithWarnings() (kubernetes.Interface, *Warnings) {
	w := &Warnings{}
	cfg := rest.CopyConfig(e.Config)
	cfg.WarningHandler = w
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		// NewForConfig fails only on an invalid config, which e.Config is not.
		panic(fmt.Sprintf("clientset from a valid config: %v", err))
	}
	return c, w
}

// WaitTimeout bounds the WaitFor helpers: the API server picks up a new webhook configuration
// and the webhook a new namespace or policy within a second or two; 30s leaves room for a
// loaded machine.
const WaitTimeout = 30 * time.Second

// WaitForDryRun creates pod in ns with server-side dry run until cond accepts the result, and
// returns that result. It is how a test knows the API server and the webhook see the newest
// configuration, policy and namespace labels, without sleeping. An admission error is handed to
// cond as well (out is nil then), so a test can also wait for a rejection.
func (e *Env) WaitForDryRun(t testing.TB, ns string, pod *corev1.Pod, cond func(out *corev1.Pod, warnings []string, err error) bool) (*corev1.Pod, []string) {
	t.Helper()
	var (
		out      *corev1.Pod
		warnings []string
		lastErr  error
	)
	err := Poll(t.Context(), WaitTimeout, func(ctx context.Context) (bool, error) {
		out, warnings, lastErr = e.DryRun(ctx, ns, pod)
		return cond(out, warnings, lastErr), nil
	})
	if err != nil {
		t.Fatalf("dry-run of pod %q in %s never met the condition: %v\nlast result: %s\nlast warnings: %q\nlast error: %v",
			pod.Name, ns, err, podImages(out), warnings, lastErr)
	}
	return out, warnings
}

// WaitForMutation waits until a dry-run pod with image in ns comes back with a different image,
// i.e. until the webhook configuration is in effect and pullgate mutates in ns. It returns the
// mutated pod.
func (e *Env) WaitForMutation(t testing.TB, ns, image string) *corev1.Pod {
	t.Helper()
	out, _ := e.WaitForDryRun(t, ns, NewPod("probe", image), func(out *corev1.Pod, _ []string, err error) bool {
		return err == nil && out.Spec.Containers[0].Image != image
	})
	return out
}

// podImages summarises a pod's images for failure messages.
func podImages(p *corev1.Pod) string {
	if p == nil {
		return "<none>"
	}
	var parts []string
	for _, c := range p.Spec.InitContainers {
		parts = append(parts, "init "+c.Name+"="+c.Image+" ("+string(c.ImagePullPolicy)+")")
	}
	for _, c := range p.Spec.Containers {
		parts = append(parts, c.Name+"="+c.Image+" ("+string(c.ImagePullPolicy)+")")
	}
	for _, c := range p.Spec.EphemeralContainers {
		parts = append(parts, "ephemeral "+c.Name+"="+c.Image+" ("+string(c.ImagePullPolicy)+")")
	}
	var secrets []string
	for _, s := range p.Spec.ImagePullSecrets {
		secrets = append(secrets, s.Name)
	}
	return strings.Join(parts, ", ") + "; imagePullSecrets=" + strings.Join(secrets, ",")
}

// Kubectl runs the kubectl built beside kube-apiserver against the suite's API server and returns
// its combined output. It fails t when there is no kubectl.
func (e *Env) Kubectl(t testing.TB, args ...string) (string, error) {
	t.Helper()
	bin := filepath.Join(e.Opts.KubeDir, "kubectl")
	if !isExecutable(bin) {
		t.Fatalf("no kubectl in %s (hack/kube-binaries.sh builds it)", e.Opts.KubeDir)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", e.Kubeconfig}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func jsonMarshal(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("marshal: %w", err)
	}
	return b, nil
}
