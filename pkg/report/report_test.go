package report

import (
	"errors"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/policy"
)

const testPolicy = `apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors: [{registry: docker.io, mirror: mirror.example.com/hub}]
imagePullSecrets: [mirror-pull]
allowPodOptOut: true
exclude: {namespaces: [kube-system]}
`

func compile(t testing.TB) *policy.Compiled {
	t.Helper()
	pol, err := policy.Check([]byte(testPolicy))
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

func newPod(ns, name, image string, mod ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: image}}},
	}
	for _, m := range mod {
		m(p)
	}
	return p
}

func ownedBy(kind, name, hash string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		yes := true
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: name, Controller: &yes}}
		if hash != "" {
			p.Labels = map[string]string{"pod-template-hash": hash}
		}
	}
}

// answers resolves every request to a digest, failing the tags named in fail.
func answers(s *Scan, fail ...string) map[string]contract.Outcome {
	out := map[string]contract.Outcome{}
	for _, r := range s.Requests() {
		o := contract.Outcome{Resolution: contract.Resolution{Digest: "sha256:" + fmt.Sprintf("%064x", len(r.Ref.String()))}}
		for _, f := range fail {
			if r.Ref.TagStr() == f {
				o = contract.Outcome{Err: errors.New("manifest unknown")}
			}
		}
		out[key(r)] = o
	}
	return out
}

// mutated is a pod as pullgate's enforce admission left it.
func mutated(pol *policy.Compiled, generation string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Spec.Containers[0].Image = "mirror.example.com/hub/library/nginx:1.27@sha256:" + fmt.Sprintf("%064x", 1)
		p.Spec.Containers[0].ImagePullPolicy = corev1.PullIfNotPresent
		p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "mirror-pull"}}
		p.Annotations = map[string]string{mutate.OriginalAnnotation: `{"policy":"` + generation + `","images":{"spec.containers[0].image":"nginx:1.27"}}`}
	}
}

func TestFindings(t *testing.T) {
	t.Parallel()
	pol := compile(t)
	nss := []Namespace{
		{Name: "plain"},
		{Name: "aud", Labels: map[string]string{policy.ModeLabel: "audit"}},
		{Name: "enf", Labels: map[string]string{policy.ModeLabel: "enforce"}},
		{Name: "kube-system"},
	}
	pods := []*corev1.Pod{
		newPod("plain", "web-abc-1", "nginx:1.27", ownedBy("ReplicaSet", "web-abc", "abc")),
		newPod("plain", "web-abc-2", "nginx:1.27", ownedBy("ReplicaSet", "web-abc", "abc")),
		newPod("aud", "db-0", "postgres:16", ownedBy("StatefulSet", "db", "")),
		newPod("aud", "optout", "nginx:1.27", func(p *corev1.Pod) { p.Annotations = map[string]string{mutate.SkipAnnotation: "true"} }),
		newPod("enf", "outage", "nginx:1.27"),
		newPod("enf", "good", "nginx:1.27", mutated(pol, pol.Generation())),
		newPod("enf", "old", "nginx:1.27", mutated(pol, "000000000000"), func(p *corev1.Pod) { p.Spec.Containers[0].ImagePullPolicy = corev1.PullAlways }),
		newPod("enf", "broken", "NOT::valid"),
		newPod("enf", "gone", "gone:1"),
		newPod("kube-system", "dns", "coredns:1"),
	}
	s := Plan(pol, nss, pods, Options{})
	f := s.Finish(answers(s, "1"))
	by := map[string]NamespaceFindings{}
	for _, ns := range f.Namespaces {
		by[ns.Name] = ns
	}
	tests := []struct {
		ns      string
		mode    string
		pods    int
		changed int
		drifted int
		counts  Counts
		skipped map[string]int
	}{
		{"plain", ModeNotOptedIn, 2, 2, 0, Counts{Rewrite: 2, Pin: 2, PullPolicy: 2, PullSecret: 2}, map[string]int{}},
		{"aud", string(policy.ModeAudit), 2, 1, 0, Counts{Rewrite: 1, Pin: 1, PullPolicy: 1, PullSecret: 1}, map[string]int{mutate.SkipOptedOut: 1}},
		// outage: rewrite, pin, pull policy, secret; old: pull policy; broken: unpinnable
		// (and its secret); gone: rewrite, unpinnable (its tag fails), secret.
		{"enf", string(policy.ModeEnforce), 5, 4, 4, Counts{Rewrite: 2, Pin: 1, PullPolicy: 2, PullSecret: 3, Unpinnable: 2}, map[string]int{}},
		{"kube-system", ModeExcluded, 1, 0, 0, Counts{}, map[string]int{mutate.SkipNamespaceExcluded: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.ns, func(t *testing.T) {
			got := by[tc.ns]
			if got.Mode != tc.mode || got.Pods != tc.pods || got.Changed != tc.changed || got.Drifted != tc.drifted || got.Counts != tc.counts || fmt.Sprint(got.Skipped) != fmt.Sprint(tc.skipped) {
				t.Errorf("got mode=%q pods=%d changed=%d drifted=%d counts=%+v skipped=%v\nwant mode=%q pods=%d changed=%d drifted=%d counts=%+v skipped=%v",
					got.Mode, got.Pods, got.Changed, got.Drifted, got.Counts, got.Skipped, tc.mode, tc.pods, tc.changed, tc.drifted, tc.counts, tc.skipped)
			}
		})
	}
	if w := by["plain"].Workloads; len(w) != 1 || w[0].Kind != "Deployment" || w[0].Name != "web" || w[0].Pods != 2 || w[0].Findings[0].Pods != 2 {
		t.Errorf("plain's workloads: %+v, want one Deployment web of 2 pods", w)
	}
	causes := map[string]string{}
	for _, w := range by["enf"].Workloads {
		for _, fd := range w.Findings {
			if fd.Rule == RuleDrift || fd.Rule == RuleNotFromMirror {
				causes[w.Name] = fd.Cause
				if fd.Result != ResultFail {
					t.Errorf("%s: drift result %q, want fail", w.Name, fd.Result)
				}
			}
		}
	}
	want := map[string]string{"outage": CauseNotAdmitted, "old": CausePolicyChanged, "broken": CauseNotAdmitted, "gone": CauseNotAdmitted}
	if fmt.Sprint(causes) != fmt.Sprint(want) {
		t.Errorf("drift causes %v, want %v", causes, want)
	}

	reports, cluster := Reports(f, time.Unix(0, 0))
	if len(reports) != 3 {
		t.Errorf("%d namespace reports, want 3 (kube-system has no findings)", len(reports))
	}
	for _, r := range reports {
		if r.Namespace == "enf" && (r.Summary.Fail == 0 || r.Results[0].Result != ResultFail) {
			t.Errorf("enforce report: summary %+v, first result %q", r.Summary, r.Results[0].Result)
		}
		if r.Namespace == "aud" && r.Summary.Fail != 0 {
			t.Errorf("audit report fails: %+v", r.Summary)
		}
	}
	if cluster.Summary.Fail == 0 || cluster.Summary.Pass != 1 {
		t.Errorf("cluster summary %+v", cluster.Summary)
	}
}

// 5,000 bare pods with findings in one namespace: the report stays within its bounds and says
// how many results it left out.
func TestReportBounds(t *testing.T) {
	t.Parallel()
	pol := compile(t)
	var pods []*corev1.Pod
	for i := range 5000 {
		pods = append(pods, newPod("big", fmt.Sprintf("pod-%04d-%s", i, string(make([]byte, 0))), fmt.Sprintf("docker.io/some-team/a-rather-long-repository-name-%d:v%d", i%300, i)))
	}
	s := Plan(pol, []Namespace{{Name: "big", Labels: map[string]string{policy.ModeLabel: "enforce"}}}, pods, Options{})
	if n := len(s.Requests()); n != 5000 {
		t.Fatalf("%d requests, want 5000", n)
	}
	reports, cluster := Reports(s.Finish(answers(s)), time.Now())
	r := reports[0]
	if len(r.Results) > MaxResults || Size(r) > MaxBytes {
		t.Errorf("report: %d results, %d bytes; bounds %d and %d", len(r.Results), Size(r), MaxResults, MaxBytes)
	}
	total := r.Summary.Fail + r.Summary.Warn
	if omitted := r.Annotations[OmittedAnnotation]; omitted != fmt.Sprint(total-len(r.Results)) || total != 5000*4 {
		t.Errorf("omitted %q, summary %+v, %d kept", omitted, r.Summary, len(r.Results))
	}
	if Size(cluster) > MaxBytes {
		t.Errorf("cluster report %d bytes", Size(cluster))
	}
}

// The API server stores what a pod's image says whatever it is (a pod created before a
// validation existed, or through a bug): such a field is unpinnable, the rest of the pod still
// counts.
func TestUnparseableImage(t *testing.T) {
	t.Parallel()
	pol := compile(t)
	bad := newPod("aud", "bad", "nginx:1.27", func(p *corev1.Pod) {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "x", Image: "UPPER/Case::tag"})
	})
	s := Plan(pol, []Namespace{{Name: "aud", Labels: map[string]string{policy.ModeLabel: "audit"}}}, []*corev1.Pod{bad}, Options{})
	ns := s.Finish(answers(s)).Namespaces[0]
	if ns.Counts.Unpinnable != 1 || ns.Counts.Rewrite != 1 {
		t.Fatalf("counts %+v, want one unpinnable and one rewrite", ns.Counts)
	}
	for _, fd := range ns.Workloads[0].Findings {
		if fd.Rule == RuleUnpinnable && (fd.Field != "spec.containers[1].image" || fd.Reason == "") {
			t.Errorf("unpinnable finding %+v", fd)
		}
	}
}

func TestNotResolved(t *testing.T) {
	t.Parallel()
	pol := compile(t)
	s := Plan(pol, []Namespace{{Name: "a"}}, []*corev1.Pod{newPod("a", "p", "nginx:1")}, Options{})
	ns := s.Finish(Resolve(t.Context(), nil, s.Requests(), 4, time.Second, nil)).Namespaces[0]
	if ns.Counts.Pin != 1 || ns.Counts.Unpinnable != 0 || ns.Counts.PullPolicy != 0 {
		t.Errorf("counts %+v: a tag not looked up is a pin", ns.Counts)
	}
}

func TestSlim(t *testing.T) {
	t.Parallel()
	p := newPod("a", "p", "nginx:1", ownedBy("ReplicaSet", "web-abc", "abc"), func(p *corev1.Pod) {
		p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "BIG", Value: "x"}}
		p.Annotations = map[string]string{"other": "x", mutate.SkipAnnotation: "true"}
		p.Spec.Volumes = []corev1.Volume{{Name: "cfg"}, {Name: "img", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: "data:1"}}}}
	})
	got, _ := Slim(p)
	s := got.(*corev1.Pod)
	if s.Spec.Containers[0].Env != nil || s.Annotations["other"] != "" || s.Annotations[mutate.SkipAnnotation] != "true" ||
		s.Spec.Volumes[1].Image.Reference != "data:1" || TopOwner(s).Name != "web" {
		t.Errorf("slim pod %+v", s)
	}
}

// A digest mismatch the resolver found is a warning result of its own, naming the likely cause,
// in any mode, beside the pin it comes with.
func TestDigestMismatchResult(t *testing.T) {
	t.Parallel()
	pol := compile(t)
	s := Plan(pol, []Namespace{{Name: "enf", Labels: map[string]string{policy.ModeLabel: "enforce"}}}, []*corev1.Pod{newPod("enf", "p", "nginx:1.27")}, Options{})
	outcomes := answers(s)
	for k, o := range outcomes {
		o.Mismatch = &contract.DigestMismatch{Mirror: "mirror.example.com", Upstream: "index.docker.io/library/nginx:1.27", MirrorDigest: o.Digest,
			UpstreamDigest: "sha256:" + fmt.Sprintf("%064x", 2), Cause: contract.CauseTrimmedIndex}
		outcomes[k] = o
	}
	reports, _ := Reports(s.Finish(outcomes), time.Unix(0, 0))
	var found int
	for _, r := range reports[0].Results {
		if r.Rule != RuleDigestMismatch {
			continue
		}
		found++
		if r.Result != ResultWarn || r.Properties["cause"] != contract.CauseTrimmedIndex || r.Properties["field"] != "spec.containers[0].image" ||
			r.Properties["image"] != "nginx:1.27" || r.Properties["reason"] == "" || r.Description != Message(RuleDigestMismatch) {
			t.Errorf("digest-mismatch result %+v", r)
		}
		t.Logf("reason: %s", r.Properties["reason"])
	}
	if found != 1 {
		t.Errorf("%d digest-mismatch results, want 1", found)
	}
}
