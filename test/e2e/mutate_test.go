//go:build e2e

package e2e_test

import (
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	ggcrtypes "github.com/google/go-containerregistry/pkg/v1/types"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/pullgate/pullgate/test/e2e"
)

// Scenario 1: in an enforce namespace every image of the stored pod is on the mirror, pinned to
// the digest that was pushed upstream, IfNotPresent, and the mirror pull secret is appended to
// the pod's own.
func TestEnforce(t *testing.T) {
	s := e2e.NewScope(t)
	env.Pullgate(t, s, env.DefaultPolicy(), "")
	ns := env.Namespace(t, s, "enforce")

	const app, initc, latest = "e2e/enforce-app:v1", "e2e/enforce-init:v1", "e2e/enforce-latest"
	dApp := env.PushImage(t, app)
	dInit := env.PushImage(t, initc)
	dLatest := env.PushImage(t, latest+":latest")
	env.WaitForMutation(t, ns, env.UpstreamRef(app))

	// The tagless image is defaulted to Always by the API server before pullgate sees it.
	pod := e2e.NewPod("app", env.UpstreamRef(app), env.UpstreamRef(latest), e2e.PauseImage)
	pod.Spec.InitContainers = []corev1.Container{{Name: "init", Image: env.UpstreamRef(initc)}}
	pod.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "own"}}
	stored := create(t, ns, pod)

	checkContainer(t, "container", stored.Spec.Containers[0], pinned(app, dApp), corev1.PullIfNotPresent)
	checkContainer(t, "init container", stored.Spec.InitContainers[0], pinned(initc, dInit), corev1.PullIfNotPresent)
	// A tagless reference pins to what :latest names; accept it with or without the tag spelt out.
	if c := stored.Spec.Containers[1]; c.Image != pinned(latest+":latest", dLatest) && c.Image != pinned(latest, dLatest) {
		t.Errorf("tagless container: image = %q, want %q", c.Image, pinned(latest+":latest", dLatest))
	} else if c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("tagless container: imagePullPolicy = %q, want IfNotPresent", c.ImagePullPolicy)
	}
	checkContainer(t, "excluded container", stored.Spec.Containers[2], e2e.PauseImage, "")
	checkSecrets(t, stored, "own", e2e.MirrorSecret)

	// What was pinned is servable by the mirror, by digest.
	if d := env.Head(t, pinned(app, dApp)); d.Digest != dApp {
		t.Errorf("mirror serves %s for %s", d.Digest, pinned(app, dApp))
	}

	t.Run("image volume", func(t *testing.T) {
		const data = "e2e/enforce-data:v1"
		dData := env.PushImage(t, data)
		pod := e2e.NewPod("volume", env.UpstreamRef(app))
		pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{
			Image: &corev1.ImageVolumeSource{Reference: env.UpstreamRef(data), PullPolicy: corev1.PullIfNotPresent},
		}}}
		out, _, err := env.DryRun(t.Context(), ns, pod)
		if err != nil {
			t.Fatalf("dry-run pod with an image volume: %v", err)
		}
		if len(out.Spec.Volumes) == 0 || out.Spec.Volumes[0].Image == nil {
			t.Fatal("the API server dropped the image volume: is the ImageVolume feature on in this kube-apiserver?")
		}
		stored := create(t, ns, pod)
		if got := stored.Spec.Volumes[0].Image.Reference; got != pinned(data, dData) {
			t.Errorf("image volume reference = %q, want %q", got, pinned(data, dData))
		}
	})
}

// Scenario 2: namespaces that did not opt in, and kube-system even when labelled, are stored
// exactly as submitted.
func TestUntouched(t *testing.T) {
	s := e2e.NewScope(t)
	env.Pullgate(t, s, env.DefaultPolicy(), "")
	const app = "e2e/untouched:v1"
	env.PushImage(t, app)
	image := env.UpstreamRef(app)
	env.WaitForMutation(t, env.Namespace(t, s, "enforce"), image)

	checkUntouched := func(t *testing.T, stored *corev1.Pod) {
		t.Helper()
		checkContainer(t, "container", stored.Spec.Containers[0], image, corev1.PullIfNotPresent)
		checkSecrets(t, stored)
	}
	t.Run("unlabelled namespace", func(t *testing.T) {
		checkUntouched(t, create(t, env.Namespace(t, s, ""), e2e.NewPod("app", image)))
	})
	t.Run("unknown mode value", func(t *testing.T) {
		checkUntouched(t, create(t, env.Namespace(t, s, "off"), e2e.NewPod("app", image)))
	})
	t.Run("kube-system labelled enforce", func(t *testing.T) {
		enforce, yes := "enforce", "true"
		env.LabelNamespace(t, metav1.NamespaceSystem, map[string]*string{e2e.ModeLabel: &enforce, s.Label: &yes})
		pod := e2e.NewPod("untouched-"+s.ID, image)
		deleteLater(t, metav1.NamespaceSystem, pod.Name)
		checkUntouched(t, create(t, metav1.NamespaceSystem, pod))
	})
	// The chart's namespaceSelector keeps kube-system away from the webhook; the policy's own
	// exclude list must hold when a hand-written configuration forgets to.
	t.Run("kube-system excluded by policy alone", func(t *testing.T) {
		s := e2e.NewScope(t)
		w := env.StartWebhook(t, e2e.WebhookOptions{Policy: env.DefaultPolicy()})
		cfg := e2e.WebhookConfig("pullgate-"+s.ID, s, w.URL, w.CABundle, "")
		sel := cfg.Webhooks[0].NamespaceSelector
		sel.MatchExpressions = slicesDeleteKey(sel.MatchExpressions, "kubernetes.io/metadata.name")
		env.Register(t, cfg)
		env.WaitForMutation(t, env.Namespace(t, s, "enforce"), image)

		enforce, yes := "enforce", "true"
		env.LabelNamespace(t, metav1.NamespaceSystem, map[string]*string{e2e.ModeLabel: &enforce, s.Label: &yes})
		pod := e2e.NewPod("policy-excluded-"+s.ID, image)
		deleteLater(t, metav1.NamespaceSystem, pod.Name)
		checkUntouched(t, create(t, metav1.NamespaceSystem, pod))
	})
}

func slicesDeleteKey(in []metav1.LabelSelectorRequirement, key string) []metav1.LabelSelectorRequirement {
	var out []metav1.LabelSelectorRequirement
	for _, r := range in {
		if r.Key != key {
			out = append(out, r)
		}
	}
	return out
}

// Scenario 3: an audit namespace stores the pod untouched and tells the client what pullgate
// would have done, through admission warnings.
func TestAudit(t *testing.T) {
	const app = "e2e/audit:v1"
	env.PushImage(t, app)
	image := env.UpstreamRef(app)

	t.Run("namespace label audit overrides policy Enforce", func(t *testing.T) {
		s := e2e.NewScope(t)
		env.Pullgate(t, s, env.DefaultPolicy(), "")
		ns := env.Namespace(t, s, "audit")
		env.WaitForDryRun(t, ns, e2e.NewPod("probe", image), func(_ *corev1.Pod, warnings []string, err error) bool {
			return err == nil && mentions(warnings, image)
		})

		c, warnings := env.ClientWithWarnings()
		if _, err := c.CoreV1().Pods(ns).Create(t.Context(), e2e.NewPod("app", image), metav1.CreateOptions{}); err != nil {
			t.Fatalf("create: %v", err)
		}
		got := warnings.Take()
		t.Logf("warnings: %q", got)
		if !mentions(got, image) {
			t.Errorf("no warning mentions %s: %q", image, got)
		}
		if !mentions(got, "would") {
			t.Errorf(`no warning says what pullgate "would" do: %q`, got)
		}
		stored := get(t, ns, "app")
		checkContainer(t, "container", stored.Spec.Containers[0], image, corev1.PullIfNotPresent)
		checkSecrets(t, stored)
	})

	t.Run("namespace label enforce overrides policy Audit", func(t *testing.T) {
		s := e2e.NewScope(t)
		p := env.DefaultPolicy()
		p.Mode = "Audit"
		env.Pullgate(t, s, p, "")
		ns := env.Namespace(t, s, "enforce")
		env.WaitForMutation(t, ns, image)
		stored := create(t, ns, e2e.NewPod("app", image))
		if !strings.HasPrefix(stored.Spec.Containers[0].Image, env.Mirror+"/") || !isPinned(stored.Spec.Containers[0].Image) {
			t.Errorf("image = %q, want it pinned on the mirror", stored.Spec.Containers[0].Image)
		}
	})
}

// Scenario 4: an ephemeral container added through the pods/ephemeralcontainers subresource,
// as `kubectl debug` does, is rewritten and pinned.
func TestEphemeralContainer(t *testing.T) {
	s := e2e.NewScope(t)
	env.Pullgate(t, s, env.DefaultPolicy(), "")
	ns := env.Namespace(t, s, "enforce")
	const app, debug, debug2 = "e2e/ephemeral-app:v1", "e2e/ephemeral-debug:v1", "e2e/ephemeral-debug:v2"
	env.PushImage(t, app)
	dDebug := env.PushImage(t, debug)
	dDebug2 := env.PushImage(t, debug2)
	env.WaitForMutation(t, ns, env.UpstreamRef(app))
	create(t, ns, e2e.NewPod("app", env.UpstreamRef(app)))

	t.Run("UpdateEphemeralContainers", func(t *testing.T) {
		pod := get(t, ns, "app")
		pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{
				Name: "debugger", Image: env.UpstreamRef(debug), TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			},
			TargetContainerName: "c0",
		})
		if _, err := env.Client.CoreV1().Pods(ns).UpdateEphemeralContainers(t.Context(), "app", pod, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("update ephemeral containers: %v", err)
		}
		stored := get(t, ns, "app")
		ec := ephemeral(t, stored, "debugger")
		checkContainer(t, "ephemeral container", corev1.Container{Name: ec.Name, Image: ec.Image, ImagePullPolicy: ec.ImagePullPolicy},
			pinned(debug, dDebug), corev1.PullIfNotPresent)
	})

	t.Run("kubectl debug", func(t *testing.T) {
		out, err := env.Kubectl(t, "debug", "-n", ns, "app", "--image="+env.UpstreamRef(debug2), "--container=debugger2")
		if err != nil {
			t.Fatalf("kubectl debug: %v\n%s", err, out)
		}
		ec := ephemeral(t, get(t, ns, "app"), "debugger2")
		if ec.Image != pinned(debug2, dDebug2) {
			t.Errorf("ephemeral container image = %q, want %q", ec.Image, pinned(debug2, dDebug2))
		}
	})
}

func ephemeral(t *testing.T, p *corev1.Pod, name string) corev1.EphemeralContainer {
	t.Helper()
	for _, c := range p.Spec.EphemeralContainers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("stored pod has no ephemeral container %q", name)
	return corev1.EphemeralContainer{}
}

// Scenario 5: changing the image of an existing pod (`kubectl set image`) is an UPDATE the API
// server only accepts when nothing but images changes; pullgate rewrites and pins the new image
// without touching anything else.
func TestUpdateImage(t *testing.T) {
	s := e2e.NewScope(t)
	env.Pullgate(t, s, env.DefaultPolicy(), "")
	ns := env.Namespace(t, s, "enforce")
	const v1tag, v2tag, v3tag = "e2e/update:v1", "e2e/update:v2", "e2e/update:v3"
	dV1 := env.PushImage(t, v1tag)
	dV2 := env.PushImage(t, v2tag)
	dV3 := env.PushImage(t, v3tag)
	env.WaitForMutation(t, ns, env.UpstreamRef(v1tag))

	stored := create(t, ns, e2e.NewPod("app", env.UpstreamRef(v1tag)))
	checkContainer(t, "container", stored.Spec.Containers[0], pinned(v1tag, dV1), corev1.PullIfNotPresent)

	t.Run("strategic merge patch", func(t *testing.T) {
		patch := `{"spec":{"containers":[{"name":"c0","image":"` + env.UpstreamRef(v2tag) + `"}]}}`
		if _, err := env.Client.CoreV1().Pods(ns).Patch(t.Context(), "app", k8stypes.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatalf("patch image: %v", err)
		}
		stored := get(t, ns, "app")
		checkContainer(t, "container", stored.Spec.Containers[0], pinned(v2tag, dV2), corev1.PullIfNotPresent)
		checkSecrets(t, stored, e2e.MirrorSecret)
	})

	t.Run("kubectl set image", func(t *testing.T) {
		out, err := env.Kubectl(t, "set", "image", "-n", ns, "pod/app", "c0="+env.UpstreamRef(v3tag))
		if err != nil {
			t.Fatalf("kubectl set image: %v\n%s", err, out)
		}
		stored := get(t, ns, "app")
		checkContainer(t, "container", stored.Spec.Containers[0], pinned(v3tag, dV3), corev1.PullIfNotPresent)
		checkSecrets(t, stored, e2e.MirrorSecret)
	})
}

// Scenario 6: a server-side dry run returns the mutated pod and stores nothing.
func TestDryRun(t *testing.T) {
	s := e2e.NewScope(t)
	env.Pullgate(t, s, env.DefaultPolicy(), "")
	ns := env.Namespace(t, s, "enforce")
	const app = "e2e/dryrun:v1"
	d := env.PushImage(t, app)
	env.WaitForMutation(t, ns, env.UpstreamRef(app))

	out, err := env.Client.CoreV1().Pods(ns).Create(t.Context(), e2e.NewPod("dry", env.UpstreamRef(app)),
		metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		t.Fatalf("dry-run create: %v", err)
	}
	checkContainer(t, "container", out.Spec.Containers[0], pinned(app, d), corev1.PullIfNotPresent)
	checkSecrets(t, out, e2e.MirrorSecret)
	if _, err := env.Client.CoreV1().Pods(ns).Get(t.Context(), "dry", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("get after dry run: err = %v, want NotFound", err)
	}
}

// Scenario 11: a multi-platform image pins to the digest of its index, the same through the
// pull-through mirror as upstream, for both index media types.
func TestMultiArch(t *testing.T) {
	s := e2e.NewScope(t)
	env.Pullgate(t, s, env.DefaultPolicy(), "")
	ns := env.Namespace(t, s, "enforce")
	const probe = "e2e/multiarch-probe:v1"
	env.PushImage(t, probe)
	env.WaitForMutation(t, ns, env.UpstreamRef(probe))

	platforms := []v1.Platform{
		{OS: "linux", Architecture: "amd64"},
		{OS: "linux", Architecture: "arm64", Variant: "v8"},
		{OS: "linux", Architecture: "s390x"},
	}
	for _, tc := range []struct {
		name string
		mt   ggcrtypes.MediaType
	}{
		{"docker manifest list", ggcrtypes.DockerManifestList},
		{"oci image index", ggcrtypes.OCIImageIndex},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := "e2e/multiarch-" + strings.ReplaceAll(tc.name, " ", "-") + ":v1"
			d := env.PushIndex(t, repo, tc.mt, platforms...)
			if up := env.Head(t, env.UpstreamRef(repo)); up.Digest != d {
				t.Fatalf("upstream HEAD %s = %s, pushed %s", repo, up.Digest, d)
			}
			stored := create(t, ns, e2e.NewPod(strings.ReplaceAll(tc.name, " ", "-"), env.UpstreamRef(repo)))
			checkContainer(t, "container", stored.Spec.Containers[0], pinned(repo, d), corev1.PullIfNotPresent)
			m := env.Head(t, pinned(repo, d))
			if m.Digest != d || m.MediaType != tc.mt {
				t.Errorf("mirror serves %s (%s) for the pinned index, want %s (%s)", m.Digest, m.MediaType, d, tc.mt)
			}
		})
	}
}
