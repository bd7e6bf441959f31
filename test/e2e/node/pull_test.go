//go:build e2e

package node_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullgate/pullgate/test/e2e"
)

// TestPullgateRunsAsPod: the chart's Deployment runs pullgate's own image on the node, two
// replicas behind a PDB, and the API server calls it through its Service.
func TestPullgateRunsAsPod(t *testing.T) {
	ctx := t.Context()
	c := env.Client
	d, err := pg.Deployment(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.Status.ReadyReplicas != 2 {
		t.Errorf("ready replicas = %d, want 2", d.Status.ReadyReplicas)
	}
	pods, err := c.CoreV1().Pods(pg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=pullgate"})
	if err != nil {
		t.Fatal(err)
	}
	want := env.Node.Images.PullgateRepository + "@" + env.Node.Images.PullgateDigest
	ready := 0
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, s := range p.Status.ContainerStatuses {
			if s.ImageID != want {
				t.Errorf("pod %s runs %q, want pullgate's own image %q", p.Name, s.ImageID, want)
			}
			if s.Ready {
				ready++
			}
		}
		if p.Spec.NodeName != env.Node.Name {
			t.Errorf("pod %s on node %q", p.Name, p.Spec.NodeName)
		}
	}
	if ready != 2 {
		t.Errorf("%d ready webhook containers, want 2", ready)
	}
	pdb, err := c.PolicyV1().PodDisruptionBudgets(pg.Namespace).Get(ctx, pg.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("PodDisruptionBudget: %v", err)
	}
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 {
		t.Errorf("PDB minAvailable = %v, want 1", pdb.Spec.MinAvailable)
	}
	mwc, err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, pg.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cc := mwc.Webhooks[0].ClientConfig
	if cc.URL != nil || cc.Service == nil || cc.Service.Name != pg.Name || cc.Service.Namespace != pg.Namespace {
		t.Errorf("webhook clientConfig = %+v, want the chart's Service and no URL", cc)
	}
	if len(cc.CABundle) == 0 {
		t.Error("cainjector did not inject the CA into the webhook configuration")
	}
	eps, err := c.CoreV1().Endpoints(pg.Namespace).Get(ctx, pg.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	addrs := 0
	for _, s := range eps.Subsets {
		addrs += len(s.Addresses)
	}
	if addrs != 2 {
		t.Errorf("Service %s has %d ready endpoints, want 2", pg.Name, addrs)
	}
}

// TestPodPullsFromMirror: a pod written with upstream references, in an enforce namespace,
// runs; containerd pulled every image from the authenticated mirror by digest with the injected
// pull secret, and the upstream never heard from the node.
func TestPodPullsFromMirror(t *testing.T) {
	ctx := t.Context()
	regs := env.Node.Registries
	app := pushBusybox(t, "e2e/pull-app:v1", "app")
	initImg := pushBusybox(t, "e2e/pull-init:v1", "init")
	ns := namespace(t, "pull", "enforce", nil, true)

	before := regs.NodeRequests.Snapshot()
	pod := e2e.BusyboxPod("app", "cat /hello; echo; sleep 3600", regs.RemoteRef("e2e/pull-app:v1"))
	pod.Spec.InitContainers = []corev1.Container{{
		Name: "init", Image: regs.RemoteRef("e2e/pull-init:v1"), Command: []string{"sh", "-c", "cat /hello"},
	}}
	got := runPod(t, ns, pod)

	for _, c := range []struct {
		spec   corev1.Container
		status []corev1.ContainerStatus
		repo   string
		digest string
	}{
		{got.Spec.InitContainers[0], got.Status.InitContainerStatuses, "e2e/pull-init", initImg},
		{got.Spec.Containers[0], got.Status.ContainerStatuses, "e2e/pull-app", app},
	} {
		wantSpec := regs.MirrorRef(c.repo + ":v1@" + c.digest)
		if c.spec.Image != wantSpec || c.spec.ImagePullPolicy != corev1.PullIfNotPresent {
			t.Errorf("%s: image %q %s, want %q IfNotPresent", c.spec.Name, c.spec.Image, c.spec.ImagePullPolicy, wantSpec)
		}
		// containerd records repo:tag@digest as repo@digest.
		if len(c.status) != 1 || c.status[0].ImageID != regs.MirrorRef(c.repo+"@"+c.digest) {
			t.Errorf("%s: node's imageID = %+v, want %s", c.spec.Name, c.status, regs.MirrorRef(c.repo+"@"+c.digest))
		}
		pulls, err := regs.MirrorAccessLog("/v2/" + c.repo + "/manifests/" + c.digest)
		if err != nil {
			t.Fatal(err)
		}
		fromNode := 0
		for _, a := range pulls {
			if a.Method == http.MethodGet && a.Status == http.StatusOK && strings.HasPrefix(a.UserAgent, "containerd/") {
				fromNode++
			}
		}
		if fromNode == 0 {
			t.Errorf("%s: the mirror's access log has no GET of the manifest by containerd: %+v", c.repo, pulls)
		}
	}
	if !hasSecret(got.Spec.ImagePullSecrets, e2e.MirrorCredentials) {
		t.Errorf("imagePullSecrets = %v, want %s injected", got.Spec.ImagePullSecrets, e2e.MirrorCredentials)
	}
	if logs := podLogs(t, ns, "app", "c0"); !strings.HasPrefix(logs, "hello from app") {
		t.Errorf("container log = %q", logs)
	}
	after := regs.NodeRequests.Snapshot()
	if after.Total != before.Total {
		t.Errorf("the node sent %d requests to the upstream, want 0", after.Total-before.Total)
	}
	t.Logf("pulled: %v", env.EventMessages(ctx, ns, "app", "Pulled"))
}

func hasSecret(refs []corev1.LocalObjectReference, name string) bool {
	for _, r := range refs {
		if r.Name == name {
			return true
		}
	}
	return false
}

// pushBusybox pushes a busybox image with /hello saying "hello from <what>" to the upstream,
// as an OCI index like public images, and returns the index digest.
func pushBusybox(t *testing.T, repoTag, what string) string {
	t.Helper()
	img, err := e2e.BuildImage(e2e.ImageSpec{
		Busybox: env.Opts.Busybox,
		Files:   map[string]e2e.File{"hello": {Data: []byte("hello from " + what), Mode: 0o644}},
		Cmd:     []string{"sh"},
	})
	if err != nil {
		t.Fatal(err)
	}
	d, err := env.Node.Registries.Push(t.Context(), repoTag, e2e.Index(img))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// namespace creates a test namespace (see Env.NodeNamespace) and deletes it when t ends.
func namespace(t *testing.T, prefix, mode string, labels map[string]string, withSecret bool) string {
	t.Helper()
	ns, err := env.NodeNamespace(t.Context(), prefix, mode, labels, withSecret)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = env.Client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
	})
	return ns
}

// runPod creates pod in ns and waits until it started.
func runPod(t *testing.T, ns string, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	if _, err := env.Client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s: %v", pod.Name, err)
	}
	got, err := env.WaitPod(t.Context(), ns, pod.Name, 90*time.Second, e2e.PodStarted)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func podLogs(t *testing.T, ns, pod, container string) string {
	t.Helper()
	b, err := env.Client.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container}).DoRaw(t.Context())
	if err != nil {
		t.Fatalf("logs of %s/%s: %v", pod, container, err)
	}
	return string(b)
}
