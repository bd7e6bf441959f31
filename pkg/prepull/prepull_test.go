package prepull_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/policy"
	"github.com/pullgate/pullgate/pkg/prepull"
)

const (
	d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

const testPolicy = `apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors: [{registry: docker.io, mirror: mirror.example.com/hub}]
imagePullSecrets: [mirror-pull]
exclude: {images: ["docker.io/library/excluded:*"]}
prepull:
  - name: gpu
    images: ["nvcr.io/nvidia/pytorch:24.05-py3", busybox, "gcr.io/distroless/static@` + d1 + `", excluded:1]
    nodeSelector: {nvidia.com/gpu.present: "true"}
    tolerations: [{operator: Exists}]
    maxUnavailable: 2
`

// digests is a resolver fake: a digest per resolved tag, or an error for the others.
type digests map[string]string

func (d digests) Resolve(_ context.Context, req contract.ResolveRequest) (contract.Resolution, error) {
	if v, ok := d[req.Ref.String()]; ok {
		return contract.Resolution{Digest: v}, nil
	}
	return contract.Resolution{}, errors.New("manifest unknown")
}

func load(t *testing.T, doc string) *policy.Compiled {
	t.Helper()
	c, err := policy.Check([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var settings = prepull.Settings{Namespace: "pg", NamePrefix: "pg-prepull-", SleeperImage: "reg.example/pullgate:v1@" + d1}

// TestPinGroupUsesTheMutationCore: each image is rewritten and pinned exactly as the webhook
// would a pod's (the same planner); a digest stays, an excluded image stays as written; an image
// that cannot be resolved keeps its last pinned reference, or is left out without one.
func TestPinGroupUsesTheMutationCore(t *testing.T) {
	t.Parallel()
	pol := load(t, testPolicy)
	g := pol.Policy().Prepull[0]
	res := digests{"nvcr.io/nvidia/pytorch:24.05-py3": d1, "mirror.example.com/hub/library/busybox:latest": d2}
	for _, tc := range []struct {
		name     string
		resolver digests
		last     map[string]string
		want     []string
		kept     int
		dropped  []string
	}{
		{"all resolve", res, nil, []string{
			"nvcr.io/nvidia/pytorch:24.05-py3@" + d1,
			"mirror.example.com/hub/library/busybox:latest@" + d2,
			"gcr.io/distroless/static@" + d1,
			"excluded:1",
		}, 0, nil},
		{"busybox fails, last pinned kept", digests{"nvcr.io/nvidia/pytorch:24.05-py3": d1}, map[string]string{"busybox": "mirror.example.com/hub/library/busybox:latest@" + d1}, []string{
			"nvcr.io/nvidia/pytorch:24.05-py3@" + d1,
			"mirror.example.com/hub/library/busybox:latest@" + d1,
			"gcr.io/distroless/static@" + d1,
			"excluded:1",
		}, 1, nil},
		{"busybox fails, never pinned: left out", digests{"nvcr.io/nvidia/pytorch:24.05-py3": d1}, nil, []string{
			"nvcr.io/nvidia/pytorch:24.05-py3@" + d1,
			"gcr.io/distroless/static@" + d1,
			"excluded:1",
		}, 0, []string{"busybox"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pins, err := prepull.PinGroup(t.Context(), tc.resolver, pol, g, tc.last, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range pins.Images {
				got = append(got, p.Ref)
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("images:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
			if len(pins.Kept) != tc.kept || fmt.Sprint(pins.Dropped) != fmt.Sprint(tc.dropped) {
				t.Errorf("kept %v dropped %v, want %d kept, dropped %v", pins.Kept, pins.Dropped, tc.kept, tc.dropped)
			}
			for _, e := range pins.Errors {
				if !errors.Is(e, prepull.ErrUnpinned) || !strings.Contains(e.Error(), `"busybox"`) {
					t.Errorf("error %v: want ErrUnpinned naming busybox", e)
				}
			}
		})
	}
}

func TestDaemonSet(t *testing.T) {
	t.Parallel()
	pol := load(t, testPolicy)
	g := pol.Policy().Prepull[0]
	imgs := []prepull.Pinned{{Source: "busybox", Ref: "mirror.example.com/hub/library/busybox:latest@" + d2}, {Source: "excluded:1", Ref: "excluded:1"}}
	s := settings
	s.PullSecrets = []string{"mirror-pull", "own", "mirror-pull"}
	s.Owner = &metav1.OwnerReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "pg-controller", UID: "u1"}
	ds := prepull.DaemonSet(g, imgs, s)
	spec := ds.Spec.Template.Spec
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"name", ds.Name, "pg-prepull-gpu"},
		{"namespace", ds.Namespace, "pg"},
		{"owner", ds.OwnerReferences[0].Name, "pg-controller"},
		{"selector", ds.Spec.Selector.MatchLabels[prepull.GroupLabel], "gpu"},
		{"maxSurge", ru.MaxSurge.String(), "2"},
		{"maxUnavailable", ru.MaxUnavailable.String(), "0"},
		{"containers", len(spec.Containers), 2},
		{"image 0", spec.Containers[0].Image, imgs[0].Ref},
		{"pull policy", spec.Containers[0].ImagePullPolicy, corev1.PullIfNotPresent},
		{"command", strings.Join(spec.Containers[1].Command, " "), "/pullgate/sleeper"},
		{"init image", spec.InitContainers[0].Image, s.SleeperImage},
		{"init command", strings.Join(spec.InitContainers[0].Command, " "), "/sleeper --install /pullgate/sleeper"},
		{"pull secrets", fmt.Sprint(spec.ImagePullSecrets), "[{mirror-pull} {own}]"},
		{"node selector", spec.NodeSelector["nvidia.com/gpu.present"], "true"},
		{"tolerations", string(spec.Tolerations[0].Operator), "Exists"},
		{"run as non-root", *spec.SecurityContext.RunAsNonRoot, true},
		{"no token", *spec.AutomountServiceAccountToken, false},
		{"read-only root", *spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem, true},
		{"no escalation", *spec.Containers[0].SecurityContext.AllowPrivilegeEscalation, false},
		{"caps", fmt.Sprint(spec.Containers[0].SecurityContext.Capabilities.Drop), "[ALL]"},
		{"memory request", spec.Containers[0].Resources.Requests.Memory().String(), "16Mi"},
		{"sleeper mount read-only", spec.Containers[0].VolumeMounts[0].ReadOnly, true},
		{"last pinned", fmt.Sprint(prepull.LastPinned(ds)), fmt.Sprint(map[string]string{"busybox": imgs[0].Ref, "excluded:1": "excluded:1"})},
	} {
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
	again := prepull.DaemonSet(g, imgs, s)
	if again.Annotations[prepull.SpecHashAnnotation] != ds.Annotations[prepull.SpecHashAnnotation] {
		t.Error("the spec hash is not stable")
	}
	imgs[0].Ref = "mirror.example.com/hub/library/busybox:latest@" + d1
	if prepull.DaemonSet(g, imgs, s).Annotations[prepull.SpecHashAnnotation] == ds.Annotations[prepull.SpecHashAnnotation] {
		t.Error("the spec hash does not change with a re-pin")
	}
}

func pod(node string, ready bool, waiting string, images ...string) corev1.Pod {
	p := corev1.Pod{Spec: corev1.PodSpec{NodeName: node}}
	for _, img := range images {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Image: img})
		cs := corev1.ContainerStatus{Image: img}
		if waiting != "" {
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: waiting, Message: "boom"}
		}
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, cs)
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	return p
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	ds := &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Image: "new"}},
	}}}, Status: appsv1.DaemonSetStatus{DesiredNumberScheduled: 5}}
	st := prepull.Summarize(ds, []corev1.Pod{
		pod("a", true, "", "new"),
		pod("b", true, "", "old"), // re-pin in progress: the old pod is ready, the new one pulls
		pod("b", false, "", "new"),
		pod("c", false, "ImagePullBackOff", "new"),
		pod("d", true, "", "old"), // not started on the new digest yet
		pod("", false, "", "new"), // not scheduled
	})
	if st.Wanted != 5 || st.Pulled != 1 || st.Failed != 1 || st.Pulling != 3 {
		t.Errorf("status %+v, want wanted 5, pulled 1, failed 1, pulling 3", st)
	}
	if len(st.Failures) != 1 || !strings.HasPrefix(st.Failures[0], "c: new: ImagePullBackOff: boom") {
		t.Errorf("failures %q", st.Failures)
	}
}

type staticPolicy struct{ c *policy.Compiled }

func (s *staticPolicy) Current() *policy.Compiled { return s.c }

// TestReconcile: the DaemonSet is created, re-pinned when the tag moves, kept at its last digest
// when the tag cannot be resolved (condition False), and deleted with its group; a DaemonSet
// the controller does not own is never deleted.
func TestReconcile(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	doc := `apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors: [{registry: docker.io, mirror: mirror.example.com/hub}]
prepull: [{name: web, images: [busybox:1]}]
`
	pol := &staticPolicy{load(t, doc)}
	c := fake.NewClientBuilder().WithScheme(clientgoscheme.Scheme).WithStatusSubresource(&appsv1.DaemonSet{}).Build()
	res := digests{"mirror.example.com/hub/library/busybox:1": d1}
	r := &prepull.Reconciler{Client: c, Policy: pol, Resolver: res, Settings: settings, Now: time.Now}
	req := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "pg", Name: "pg-prepull-web"}}
	image := func() (string, *appsv1.DaemonSet) {
		t.Helper()
		var ds appsv1.DaemonSet
		if err := c.Get(ctx, req.NamespacedName, &ds); err != nil {
			t.Fatal(err)
		}
		return ds.Spec.Template.Spec.Containers[0].Image, &ds
	}
	step := func(what string) reconcile.Result {
		t.Helper()
		out, err := r.Reconcile(ctx, req)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return out
	}

	if out := step("create"); out.RequeueAfter != policy.DefaultCacheTTL {
		t.Errorf("requeue after %s, want the cache TTL", out.RequeueAfter)
	}
	if img, _ := image(); img != "mirror.example.com/hub/library/busybox:1@"+d1 {
		t.Errorf("created with %s", img)
	}
	res["mirror.example.com/hub/library/busybox:1"] = d2
	step("re-pin")
	if img, ds := image(); img != "mirror.example.com/hub/library/busybox:1@"+d2 || ds.Annotations[prepull.RepinnedAnnotation] == "" {
		t.Errorf("after the move: %s, annotations %v", img, ds.Annotations)
	}
	delete(res, "mirror.example.com/hub/library/busybox:1")
	if out := step("unresolvable"); out.RequeueAfter > 15*time.Second {
		t.Errorf("requeue after %s, want a retry within 15s", out.RequeueAfter)
	}
	img, ds := image()
	if img != "mirror.example.com/hub/library/busybox:1@"+d2 {
		t.Errorf("unresolvable tag: %s, want the last pinned digest kept", img)
	}
	if len(ds.Status.Conditions) != 1 || ds.Status.Conditions[0].Status != corev1.ConditionFalse || !strings.Contains(ds.Status.Conditions[0].Message, `"busybox:1"`) {
		t.Errorf("conditions %+v, want Pinned False naming busybox:1", ds.Status.Conditions)
	}

	foreign := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "pg-prepull-other", Namespace: "pg"}}
	if err := c.Create(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	pol.c = load(t, strings.Replace(doc, "prepull: [{name: web, images: [busybox:1]}]", "", 1))
	step("group removed")
	if _, err := r.Reconcile(ctx, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(foreign)}); err != nil {
		t.Fatal(err)
	}
	var list appsv1.DaemonSetList
	if err := c.List(ctx, &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Name != "pg-prepull-other" {
		t.Errorf("DaemonSets left: %d, want only the one pullgate does not own", len(list.Items))
	}
}
