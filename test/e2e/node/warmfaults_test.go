//go:build e2e

package node_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/warm"
	"github.com/pullgate/pullgate/test/e2e"
)

// faultCredentials is the Secret with the mirror's login for the fault proxies' addresses.
const faultCredentials = "fault-proxy-credentials"

// warmFault is one row of TestWarmFaults.
type warmFault struct {
	name string
	// mode is the fault proxy's, in front of the mirror; Pass means no proxy: the mirror's own
	// upstream is gone.
	mode    e2e.FaultMode
	warm    map[string]any // the proxy mirror's warm settings
	outcome string
	// retried: the outcome is tried again, up to warm.DefaultAttempts; else it is final.
	retried bool
	// event is a phrase the first failure's Event must hold.
	event string

	repo, digest string
	blobs        int
	host         string // the mirror host warming reads through: the metrics' label
	proxy        *e2e.FaultProxy
	pod          string
}

// TestWarmFaults is issue 14's fault acceptance on the real node bed: a warm through the real
// Distribution mirror (TLS + htpasswd) meets a mirror that answers 429 with Retry-After, one
// that stalls mid-blob, a blob whose bytes do not match its digest (each injected by a fault
// proxy between the controller and the mirror, which the policy names as a mirror of its own)
// and a mirror whose upstream is gone. Each ends with its outcome in pullgate_warm_* and in
// the pod's Events, within the configured attempts: the requests at the fault point are
// counted, and nothing is left queued.
func TestWarmFaults(t *testing.T) {
	ctx := t.Context()
	regs := env.Node.Registries
	const attempts = warm.DefaultAttempts
	faults := []*warmFault{
		{name: "mirror answers 429", mode: e2e.RateLimited, outcome: contract.WarmRateLimited, retried: true,
			// Longer than the first backoff (warmBackoff): the registry's wait wins.
			event: "trying again in 5s (attempt 2 of 4)"},
		{name: "mirror stalls mid-blob", mode: e2e.StallMidBlob, warm: map[string]any{"stallTimeout": "10s"},
			outcome: "stalled", retried: true, event: "no byte read for 10s"},
		{name: "blob bytes do not match the digest", mode: e2e.CorruptBlobs, outcome: contract.WarmDigestMismatch,
			event: "blob does not match its digest"},
		{name: "mirror's upstream gone", mode: e2e.Pass, outcome: contract.WarmServerError, retried: true,
			event: "trying again in " + warmBackoff.String() + " (attempt 2 of 4)"},
	}
	ns := namespace(t, "warmfaults", "enforce", nil, true)
	label := "pullgate.dev/e2e-warmfaults"
	for i, f := range faults {
		f.repo = fmt.Sprintf("e2e/warmfault-%d", i)
		f.digest, f.blobs = pushLayers(t, f.repo+":v1", uint64(time.Now().UnixNano())+uint64(i))
	}

	// The stalled and corrupted blobs must be the proxy's doing, not the mirror's: the mirror
	// holds those images first, warmed through it as the suite's policy says.
	var fill []string
	for _, f := range faults {
		if f.mode == e2e.StallMidBlob || f.mode == e2e.CorruptBlobs {
			fill = append(fill, pendingPod(t, ns, label, "fill-"+f.repo[len("e2e/"):], regs.RemoteRef(f.repo+"@"+f.digest)))
		}
	}
	for _, pod := range fill {
		waitWarmEvent(t, ns, pod, func(reason, _ string) bool { return reason == "MirrorWarmed" }, nil)
	}

	// One proxy per fault, on the node's address, HTTPS with a CA of their own, each a mirror
	// in the policy with the mirror's login.
	ca, err := e2e.NewCA("pullgate-e2e-fault-proxies")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Serving("fault-proxy", nil, []net.IP{net.ParseIP(e2e.NodeIP)})
	if err != nil {
		t.Fatal(err)
	}
	auths := map[string]any{}
	orig := pg.Values["policy"].(map[string]any)
	pol := maps.Clone(orig)
	mirrors := slices.Clone(orig["mirrors"].([]any))
	for i, f := range faults {
		if f.mode == e2e.Pass {
			f.host = regs.Mirror
			continue
		}
		f.proxy = e2e.StartFaultProxyWith(t, regs.Mirror, e2e.FaultProxyOptions{Listen: e2e.NodeIP + ":0", Cert: &kp, TargetCA: regs.MirrorCA})
		f.host = f.proxy.Addr
		auths[f.host] = map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(regs.MirrorUser + ":" + regs.MirrorPassword))}
		m := map[string]any{"registry": fmt.Sprintf("fault-%d.pullgate.test", i), "mirror": f.host,
			"caBundle": string(ca.CertPEM), "credentialsSecret": faultCredentials}
		if f.warm != nil {
			m["warm"] = f.warm
		}
		mirrors = append(mirrors, m)
	}
	createSecret(t, faultCredentials, auths)
	pol["mirrors"] = mirrors
	if err := pg.Upgrade(ctx, map[string]any{"policy": pol}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pg.Upgrade(context.Background(), map[string]any{"policy": orig}); err != nil {
			t.Errorf("restoring the suite's policy: %v", err)
		}
	})

	for _, f := range faults {
		if f.proxy != nil {
			f.proxy.SetRetryAfter("5")
			f.proxy.SetMode(f.mode)
		}
	}
	regs.MirrorLink.Stop()
	t.Cleanup(func() {
		if err := regs.MirrorLink.Resume(); err != nil {
			t.Error(err)
		}
	})
	logBefore, err := regs.MirrorAccessLog("")
	if err != nil {
		t.Fatal(err)
	}
	before := controllerMetrics(t)
	for _, f := range faults {
		image := f.host + "/" + f.repo + "@" + f.digest // on the proxy: the pod names the mirror
		if f.mode == e2e.Pass {
			image = regs.RemoteRef(f.repo + "@" + f.digest) // admitted as the mirror's
		}
		f.pod = pendingPod(t, ns, label, "fault-"+f.repo[len("e2e/"):], image)
	}

	// Until the controller has read the new policy it does not know the proxies for mirrors;
	// touching a pod it has not warmed for yet makes it look again (the pod informer does not
	// resync).
	touchUnwarmed := func() {
		for _, f := range faults {
			if !slices.ContainsFunc(env.Events(ctx, ns, f.pod), func(ev corev1.Event) bool { return strings.HasPrefix(ev.Reason, "Mirror") }) {
				touch(t, ns, f.pod)
			}
		}
	}
	for _, f := range faults {
		waitWarmEvent(t, ns, f.pod, func(reason, msg string) bool {
			return reason == "MirrorWarmFailed" && !strings.Contains(msg, "trying again")
		}, touchUnwarmed)
	}
	after := controllerMetrics(t)
	logAfter, err := regs.MirrorAccessLog("")
	if err != nil {
		t.Fatal(err)
	}

	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			failed := env.EventMessages(ctx, ns, f.pod, "MirrorWarmFailed")
			t.Logf("%d Events: %q", len(failed), failed)
			want := 1
			if f.retried {
				want = attempts
			}
			if len(failed) != want {
				t.Errorf("%d MirrorWarmFailed Events, want %d", len(failed), want)
			}
			if len(failed) > 0 && (!strings.Contains(failed[0], "("+f.outcome+")") || !strings.Contains(failed[0], f.event)) {
				t.Errorf("first Event %q, want outcome %s and %q", failed[0], f.outcome, f.event)
			}
			if n := env.EventMessages(ctx, ns, f.pod, "MirrorWarmed"); len(n) > 0 {
				t.Errorf("MirrorWarmed Events %q", n)
			}

			mirror := e2e.Labels{"mirror": f.host}
			delta := func(name string, l e2e.Labels) float64 { return after.Sum(name, l) - before.Sum(name, l) }
			outcomes := map[string]float64{}
			for _, s := range after {
				if s.Name == "pullgate_warm_duration_seconds_count" && s.Labels["mirror"] == f.host {
					if d := delta(s.Name, e2e.Labels{"mirror": f.host, "outcome": s.Labels["outcome"]}); d != 0 {
						outcomes[s.Labels["outcome"]] = d
					}
				}
			}
			t.Logf("pullgate_warm_duration_seconds_count{mirror=%q} moved by %v; blobs %+g, bytes %+g", f.host, outcomes,
				delta("pullgate_warm_blobs_total", mirror), delta("pullgate_warm_bytes_total", mirror))
			if !maps.Equal(outcomes, map[string]float64{f.outcome: float64(want)}) {
				t.Errorf("warm outcomes %v, want {%s: %d}", outcomes, f.outcome, want)
			}
			if f.proxy != nil {
				// Nothing read through the proxy counts as warmed: every blob was cut or wrong.
				if d := delta("pullgate_warm_blobs_total", mirror); d != 0 {
					t.Errorf("pullgate_warm_blobs_total{mirror=%q} %+g, want 0", f.host, d)
				}
			}
			for _, g := range []string{"pullgate_warm_queued", "pullgate_warm_active"} {
				if v := after.Sum(g, mirror); v != 0 {
					t.Errorf("%s{mirror=%q} = %g after the last attempt, want 0", g, f.host, v)
				}
			}

			// No retry storm: at the fault point, no more than the attempts could ask.
			if f.proxy == nil {
				gets := 0
				for _, a := range logAfter[len(logBefore):] {
					if strings.Contains(a.Path, "/v2/"+f.repo+"/manifests/") {
						gets++
					}
				}
				t.Logf("the mirror was asked for %s's manifest %d times", f.repo, gets)
				if gets < 1 || gets > want {
					t.Errorf("the mirror was asked for the manifest %d times, want 1 to %d", gets, want)
				}
				return
			}
			c := f.proxy.Requests.Snapshot()
			blobGETs := 0
			for _, n := range c.Blobs {
				blobGETs += n
			}
			t.Logf("the proxy answered %d requests: %d manifests, %d blob GETs", c.Total, c.Manifests, blobGETs)
			// Per attempt at most: a handshake's GET /v2/, the index and the image manifest,
			// each blob once.
			if limit := want * (1 + 2 + f.blobs); c.Total > limit || c.Manifests > 2*want || blobGETs > want*f.blobs {
				t.Errorf("%d requests (%d manifests, %d blob GETs) at the proxy, more than %d attempts ask (%d, %d, %d)",
					c.Total, c.Manifests, blobGETs, want, limit, 2*want, want*f.blobs)
			}
		})
	}
}

// pushLayers pushes an image of busybox and two random 1 MiB layers as an index, and returns
// its digest and number of blobs (config and layers).
func pushLayers(t *testing.T, repoTag string, seed uint64) (string, int) {
	t.Helper()
	img, err := e2e.BuildImage(e2e.ImageSpec{
		Busybox: env.Opts.Busybox, Cmd: []string{"sh"},
		RandomLayers: []int64{1 << 20, 1 << 20}, Seed: seed, LayerDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	d, err := env.Node.Registries.Push(t.Context(), repoTag, e2e.Index(img))
	if err != nil {
		t.Fatal(err)
	}
	return d, 1 + len(m.Layers)
}

// pendingPod creates a pod with image that no node matches (the autoscaler case) and returns
// its name.
func pendingPod(t *testing.T, ns, label, name, image string) string {
	t.Helper()
	pod := e2e.BusyboxPod(name, "sleep 3600", image)
	pod.Spec.NodeSelector = map[string]string{label: ns}
	if _, err := env.Client.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return name
}

// waitWarmEvent waits (up to 10 minutes: four attempts with their backoffs take four) until
// the pod has a warm Event that done accepts; each wait between looks calls every, if set.
func waitWarmEvent(t *testing.T, ns, pod string, done func(reason, msg string) bool, every func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		for _, ev := range env.Events(ctx, ns, pod) {
			if strings.HasPrefix(ev.Reason, "Mirror") && done(ev.Reason, ev.Message) {
				return
			}
		}
		select {
		case <-ctx.Done():
			var got []string
			for _, ev := range env.Events(context.Background(), ns, pod) {
				got = append(got, ev.Reason+": "+ev.Message)
			}
			t.Fatalf("pod %s: no awaited warm Event in 10m; its Events: %q", pod, got)
		case <-tick.C:
		}
		if every != nil {
			every()
		}
	}
}

// touch changes an annotation of a pod, so that watchers see it again.
func touch(t *testing.T, ns, pod string) {
	t.Helper()
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{"pullgate-e2e/touched": time.Now().Format(time.RFC3339Nano)}}})
	if _, err := env.Client.CoreV1().Pods(ns).Patch(t.Context(), pod, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// createSecret creates a dockerconfigjson Secret in pullgate's namespace, deleted when t ends.
func createSecret(t *testing.T, name string, auths map[string]any) {
	t.Helper()
	cfg, err := json.Marshal(map[string]any{"auths": auths})
	if err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: pg.Namespace},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: cfg},
	}
	if _, err := env.Client.CoreV1().Secrets(pg.Namespace).Create(t.Context(), s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Client.CoreV1().Secrets(pg.Namespace).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

func controllerMetrics(t *testing.T) e2e.Metrics {
	t.Helper()
	m, err := pg.ControllerMetrics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return m
}
