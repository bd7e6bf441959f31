//go:build e2e

package node_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullgate/pullgate/test/e2e"
)

// The pre-pull group the suite installs (see prepullValues): three images, one with a shell,
// one distroless-style (files and a nonroot user, no shell) and one scratch (a single file).
const (
	prepullGroup  = "e2e"
	prepullDS     = "pullgate-prepull-" + prepullGroup
	prepullApp    = "e2e/prepull-app"
	prepullDistro = "e2e/prepull-distroless"
	prepullScr    = "e2e/prepull-scratch"
	// prepullTTL is the suite's policy cacheTTL: how soon a moved tag is seen, by the webhook
	// and the controller alike.
	prepullTTL = 10 * time.Second
)

// prepullValues are the chart values TestMain installs with: the controller on, and the node
// policy with one pre-pull group and a short cache TTL.
func prepullValues() map[string]any {
	regs := env.Node.Registries
	pol := env.NodePolicy()
	pol["resolve"].(map[string]any)["cacheTTL"] = prepullTTL.String()
	pol["prepull"] = []any{map[string]any{
		"name":           prepullGroup,
		"images":         []any{regs.RemoteRef(prepullApp + ":v1"), regs.RemoteRef(prepullDistro + ":v1"), regs.RemoteRef(prepullScr + ":v1")},
		"tolerations":    []any{map[string]any{"operator": "Exists"}},
		"maxUnavailable": 1,
	}}
	return map[string]any{"policy": pol, "controller": map[string]any{"enabled": true}}
}

// pushNoShell pushes an image without a shell: distroless-style (a passwd file, a nonroot user)
// or scratch-style (one file, no user), and returns its index digest.
func pushNoShell(t *testing.T, repoTag, what string, distroless bool) string {
	t.Helper()
	spec := e2e.ImageSpec{Files: map[string]e2e.File{"hello": {Data: []byte("hello from " + what), Mode: 0o644}}, Entrypoint: []string{"/hello"}}
	if distroless {
		spec.Files["etc/passwd"] = e2e.File{Data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"), Mode: 0o644}
		spec.User = "65532"
	}
	img, err := e2e.BuildImage(spec)
	if err != nil {
		t.Fatal(err)
	}
	d, err := env.Node.Registries.Push(t.Context(), repoTag, e2e.Index(img))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// waitRolled waits until the group's DaemonSet pulls want (image references, in order) and
// every node runs a ready pod with them, and no old pod is left.
func waitRolled(t *testing.T, want []string, timeout time.Duration) *appsv1.DaemonSet {
	t.Helper()
	var last string
	var ds *appsv1.DaemonSet
	err := e2e.Poll(t.Context(), timeout, func(ctx context.Context) (bool, error) {
		got, err := env.Client.AppsV1().DaemonSets(pg.Namespace).Get(ctx, prepullDS, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil //nolint:nilerr // not there yet: the poll tries again and reports last
		}
		ds = got
		var imgs []string
		for _, c := range got.Spec.Template.Spec.Containers {
			imgs = append(imgs, c.Image)
		}
		s := got.Status
		last = fmt.Sprintf("images %v; generation %d/%d desired %d updated %d ready %d current %d", imgs, s.ObservedGeneration, got.Generation,
			s.DesiredNumberScheduled, s.UpdatedNumberScheduled, s.NumberReady, s.CurrentNumberScheduled)
		return strings.Join(imgs, " ") == strings.Join(want, " ") && s.ObservedGeneration >= got.Generation &&
			s.DesiredNumberScheduled == 1 && s.UpdatedNumberScheduled == 1 && s.NumberReady == 1 && s.CurrentNumberScheduled == 1, nil
	})
	if err != nil {
		env.SaveLogs(context.WithoutCancel(t.Context()), pg.Namespace)
		t.Fatalf("pre-pull DaemonSet not rolled out to %v: %s: %v", want, last, err)
	}
	return ds
}

// TestPrepull: the group's DaemonSet goes Ready with every image (a distroless and a scratch one
// among them) pinned on the mirror; a user's pod with the upstream reference then starts from
// the node's cache. When the tag moves upstream the group re-pins and rolls with a surge (a
// ready pre-pull pod, holding an image, on the node throughout), and pods admitted afterwards
// get the new digest, already on the node.
func TestPrepull(t *testing.T) {
	ctx := t.Context()
	regs := env.Node.Registries
	began := time.Now()
	app := pushBusybox(t, prepullApp+":v1", "prepull v1")
	distro := pushNoShell(t, prepullDistro+":v1", "distroless", true)
	scratch := pushNoShell(t, prepullScr+":v1", "scratch", false)
	pinned := func(app string) []string {
		return []string{regs.MirrorRef(prepullApp + ":v1@" + app), regs.MirrorRef(prepullDistro + ":v1@" + distro), regs.MirrorRef(prepullScr + ":v1@" + scratch)}
	}
	ds := waitRolled(t, pinned(app), 2*time.Minute)
	t.Logf("DaemonSet %s Ready %s after the images were pushed", ds.Name, time.Since(began).Round(time.Millisecond))
	checkPrepullPod(t, pinned(app))

	ns := namespace(t, "prepull", "enforce", nil, true)
	userPod := func(name, digest string) {
		t.Helper()
		manifests := "/v2/" + prepullApp + "/manifests/"
		before, err := regs.MirrorAccessLog(manifests)
		if err != nil {
			t.Fatal(err)
		}
		upstream := regs.NodeRequests.Snapshot()
		started := time.Now()
		got := runPod(t, ns, e2e.BusyboxPod(name, "cat /hello; sleep 3600", regs.RemoteRef(prepullApp+":v1")))
		if want := regs.MirrorRef(prepullApp + ":v1@" + digest); got.Spec.Containers[0].Image != want {
			t.Errorf("%s admitted as %q, want %q", name, got.Spec.Containers[0].Image, want)
		}
		pulled := env.EventMessages(ctx, ns, name, "Pulled")
		if len(pulled) == 0 || !strings.Contains(pulled[0], "already present on machine") {
			t.Errorf("%s: Pulled events %q, want the image already present on machine", name, pulled)
		}
		after, err := regs.MirrorAccessLog(manifests)
		if err != nil {
			t.Fatal(err)
		}
		if n := containerdGets(after) - containerdGets(before); n != 0 {
			t.Errorf("%s: containerd fetched %d manifest(s) from the mirror, want 0", name, n)
		}
		if u := regs.NodeRequests.Snapshot(); u.Total != upstream.Total {
			t.Errorf("%s: the node sent %d request(s) to the upstream", name, u.Total-upstream.Total)
		}
		t.Logf("%s: started in %s: %q", name, time.Since(started).Round(time.Millisecond), pulled)
	}
	userPod("user-v1", app)

	// The tag moves upstream.
	moved := pushBusybox(t, prepullApp+":v1", "prepull v2")
	if moved == app {
		t.Fatal("the new push has the old digest")
	}
	movedAt := time.Now()
	stopWatch := watchAvailable(t)
	waitRolled(t, pinned(moved), prepullTTL+2*time.Minute)
	if dips := stopWatch(); dips > 0 {
		t.Errorf("during the re-pin rollout, %d observation(s) found no ready pre-pull pod on the node: the old image was not kept until the new one was there", dips)
	}
	t.Logf("re-pinned and rolled %s after the tag moved", time.Since(movedAt).Round(time.Millisecond))
	if ev := env.EventMessages(ctx, pg.Namespace, prepullDS, "Repinned"); len(ev) == 0 || !strings.Contains(ev[len(ev)-1], moved) {
		t.Errorf("Repinned events %q, want one naming %s", ev, moved)
	}
	// Pods admitted from now on get the new digest (once the webhook's cache has expired too).
	err := e2e.Poll(ctx, prepullTTL+30*time.Second, func(ctx context.Context) (bool, error) {
		p, err := env.Client.CoreV1().Pods(ns).Create(ctx, e2e.BusyboxPod("probe", "true", regs.RemoteRef(prepullApp+":v1")), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return err == nil && p.Spec.Containers[0].Image == regs.MirrorRef(prepullApp+":v1@"+moved), err
	})
	if err != nil {
		t.Fatalf("the webhook did not move to the new digest: %v", err)
	}
	userPod("user-v2", moved)
}

// checkPrepullPod: the one pre-pull pod runs every image, each container running the sleeper.
func checkPrepullPod(t *testing.T, want []string) {
	t.Helper()
	pods, err := env.Client.CoreV1().Pods(pg.Namespace).List(t.Context(), metav1.ListOptions{LabelSelector: "pullgate.dev/prepull-group=" + prepullGroup})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		for i, cs := range p.Status.ContainerStatuses {
			if cs.State.Running == nil || !cs.Ready {
				t.Errorf("pod %s container %s (%s) not running: %+v", p.Name, cs.Name, p.Spec.Containers[i].Image, cs.State)
			}
		}
		t.Logf("pre-pull pod %s on %s: %d containers running", p.Name, p.Spec.NodeName, len(p.Status.ContainerStatuses))
	}
}

// containerdGets counts successful GETs by containerd in a mirror access log.
func containerdGets(log []e2e.MirrorAccess) int {
	n := 0
	for _, a := range log {
		if a.Method == http.MethodGet && a.Status == http.StatusOK && strings.HasPrefix(a.UserAgent, "containerd/") {
			n++
		}
	}
	return n
}

// watchAvailable polls the DaemonSet until stopped and counts the observations with no ready
// pre-pull pod on the node.
func watchAvailable(t *testing.T) func() int {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan int)
	go func() {
		dips := 0
		for ctx.Err() == nil {
			pods, err := env.Client.CoreV1().Pods(pg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "pullgate.dev/prepull-group=" + prepullGroup})
			if err == nil {
				ready := 0
				for _, p := range pods.Items {
					for _, c := range p.Status.Conditions {
						if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
							ready++
						}
					}
				}
				if ready == 0 {
					dips++
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
		done <- dips
	}()
	return func() int { cancel(); return <-done }
}

// TestPrepullControllerHA: two controller replicas elect one leader; killing it in the middle of
// a re-pin rollout, the other takes over and the group converges with a single DaemonSet.
func TestPrepullControllerHA(t *testing.T) {
	ctx := t.Context()
	regs := env.Node.Registries
	lease, err := env.Client.CoordinationV1().Leases(pg.Namespace).Get(ctx, "pullgate-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("leader election Lease: %v", err)
	}
	pods, err := env.Client.CoreV1().Pods(pg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=pullgate-controller"})
	if err != nil {
		t.Fatal(err)
	}
	leader, running := "", 0
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
			running++
			if lease.Spec.HolderIdentity != nil && strings.HasPrefix(*lease.Spec.HolderIdentity, p.Name+"_") {
				leader = p.Name
			}
		}
	}
	if running != 2 || leader == "" {
		t.Fatalf("%d controller pods running, lease held by %v: want 2 and one of them leading", running, lease.Spec.HolderIdentity)
	}
	acquired := 0
	for _, p := range pods.Items {
		if strings.Contains(strings.ToLower(podLogs(t, pg.Namespace, p.Name, "controller")), "successfully acquired lease") {
			acquired++
		}
	}
	if acquired != 1 {
		t.Errorf("%d controller pods say they acquired the lease, want 1", acquired)
	}

	// Whatever TestPrepull left, the current images first; then the tag moves and the leader
	// is killed as soon as the DaemonSet starts rolling.
	cur, err := env.Client.AppsV1().DaemonSets(pg.Namespace).Get(ctx, prepullDS, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	moved := pushBusybox(t, prepullApp+":v1", "prepull ha "+time.Now().String())
	want := []string{regs.MirrorRef(prepullApp + ":v1@" + moved)}
	for _, c := range cur.Spec.Template.Spec.Containers[1:] {
		want = append(want, c.Image)
	}
	err = e2e.Poll(ctx, prepullTTL+time.Minute, func(ctx context.Context) (bool, error) {
		ds, err := env.Client.AppsV1().DaemonSets(pg.Namespace).Get(ctx, prepullDS, metav1.GetOptions{})
		return err == nil && ds.Spec.Template.Spec.Containers[0].Image == want[0], err
	})
	if err != nil {
		t.Fatalf("the DaemonSet did not start rolling to %s: %v", want[0], err)
	}
	grace := int64(0)
	if err := env.Client.CoreV1().Pods(pg.Namespace).Delete(ctx, leader, metav1.DeleteOptions{GracePeriodSeconds: &grace}); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitRolled(t, want, 2*time.Minute)
	t.Logf("killed leader %s mid-rollout; converged %s later", leader, time.Since(killed).Round(time.Millisecond))
	list, err := env.Client.AppsV1().DaemonSets(pg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "pullgate.dev/prepull-group=" + prepullGroup})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Errorf("%d DaemonSets for the group, want 1", len(list.Items))
	}
	if err := pgControllerAvailable(ctx); err != nil {
		t.Error(err)
	}
}

// pgControllerAvailable waits until the controller Deployment has both replicas back.
func pgControllerAvailable(ctx context.Context) error {
	return e2e.Poll(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
		d, err := env.Client.AppsV1().Deployments(pg.Namespace).Get(ctx, "pullgate-controller", metav1.GetOptions{})
		return err == nil && d.Status.AvailableReplicas == 2, err
	})
}
