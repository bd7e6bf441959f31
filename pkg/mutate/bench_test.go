package mutate_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/pullgate/pullgate/pkg/mutate"
	"github.com/pullgate/pullgate/pkg/policy"
	"github.com/pullgate/pullgate/pkg/resolve"
)

// go test -run '^$' -bench . -benchmem ./pkg/mutate/
//
// The pods are shaped like what the API server sends after defaulting (owner reference,
// resources, probes, the projected service-account volume, default tolerations), because
// decoding the pod is a large part of the cost and an empty pod would hide it.

// BenchmarkPlanApply is the pure core: decode the pod, plan every image, apply digests that
// are already known. No resolver, no network.
func BenchmarkPlanApply(b *testing.B) {
	pol := benchPolicy(b, "mirror.example.com/hub", false)
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("containers-%d", n), func(b *testing.B) {
			in := mutate.Input{
				Operation: admissionv1.Create,
				Namespace: "apps",
				Object:    benchPodJSON(b, n, "app"),
			}
			p, err := mutate.NewPlan(pol, in)
			if err != nil {
				b.Fatal(err)
			}
			outcomes := map[string]mutate.Outcome{}
			for i, r := range p.Requests() {
				outcomes[r.Ref.String()] = mutate.Outcome{Resolution: mutate.Resolution{Digest: fmt.Sprintf("sha256:%064x", i+1)}}
			}
			if len(outcomes) != n {
				b.Fatalf("%d requests, want %d", len(outcomes), n)
			}
			if res := p.Apply(outcomes); len(res.Patch) != n+1 || len(res.Warnings) != 0 {
				b.Fatalf("patch %v warnings %v", res.Patch, res.Warnings)
			}
			b.ReportAllocs()
			for b.Loop() {
				p, err := mutate.NewPlan(pol, in)
				if err != nil {
					b.Fatal(err)
				}
				_ = p.Apply(outcomes)
			}
		})
	}
}

// BenchmarkHandle is the whole admission handler with a real resolver, resolve.New, whose cache
// is warm: the registry (go-containerregistry's, on 127.0.0.1) is asked nothing during the
// loop, which requests/op reports.
func BenchmarkHandle(b *testing.B) {
	reg := newBenchRegistry(b)
	pol := benchPolicy(b, reg.host+"/hub", true)
	res, err := resolve.New(resolve.Options{Registries: map[string]resolve.Registry{reg.host: {Insecure: true}}})
	if err != nil {
		b.Fatal(err)
	}
	h := mutate.NewHandler(mutate.Handler{Policy: benchPolicySource{pol}, Resolver: res, OwnNamespace: "pullgate"})
	for _, n := range []int{1, 10} {
		b.Run(fmt.Sprintf("warm/containers-%d", n), func(b *testing.B) {
			repo := fmt.Sprintf("bench%d", n)
			for i := range n {
				reg.push(b, fmt.Sprintf("hub/library/%s:v%d", repo, i))
			}
			req := benchRequest(b, benchPodJSON(b, n, repo))
			ctx := context.Background()
			// The first call fills the cache and checks that every image gets pinned.
			resp := h.Handle(ctx, req)
			if !resp.Allowed || len(resp.Warnings) != 0 || len(resp.Patches) != n+1 {
				b.Fatalf("allowed=%v warnings=%v patches=%v", resp.Allowed, resp.Warnings, resp.Patches)
			}
			before := reg.manifests.Load()
			b.ReportAllocs()
			for b.Loop() {
				_ = h.Handle(ctx, req)
			}
			b.ReportMetric(float64(reg.manifests.Load()-before)/float64(b.N), "requests/op")
		})
	}
}

type benchPolicySource struct{ c *policy.Compiled }

func (s benchPolicySource) Current() *policy.Compiled { return s.c }

func benchPolicy(b *testing.B, mirror string, insecure bool) *policy.Compiled {
	b.Helper()
	pol, err := policy.Check(fmt.Appendf(nil, `apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors: [{registry: docker.io, mirror: %s, insecure: %t}]
imagePullSecrets: [mirror-pull]
exclude: {namespaces: [kube-system], images: ["registry.k8s.io/pause:*"]}
`, mirror, insecure))
	if err != nil {
		b.Fatal(err)
	}
	return pol
}

// benchRegistry is go-containerregistry's in-memory registry on 127.0.0.1 with a manifest
// request counter.
type benchRegistry struct {
	host      string
	manifests atomic.Int64
}

func newBenchRegistry(b *testing.B) *benchRegistry {
	b.Helper()
	r := &benchRegistry{}
	inner := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.Contains(req.URL.Path, "/manifests/") {
			r.manifests.Add(1)
		}
		inner.ServeHTTP(w, req)
	}))
	b.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

func (r *benchRegistry) push(b *testing.B, repoTag string) {
	b.Helper()
	pushImage(b, r.host, repoTag)
}

func benchRequest(b *testing.B, raw []byte) admission.Request {
	b.Helper()
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID:       "bench",
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Namespace: "apps",
		Operation: admissionv1.Create,
		Object:    runtime.RawExtension{Raw: raw},
	}}
}

// benchPodJSON is a defaulted Deployment pod with n containers on docker.io/library/repo:v<i>.
func benchPodJSON(b *testing.B, n int, repo string) []byte {
	b.Helper()
	seconds := int64(300)
	pod := corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "web-7d4b9c8f6-",
			Namespace:    "apps",
			Labels:       map[string]string{"app.kubernetes.io/name": "web", "pod-template-hash": "7d4b9c8f6"},
			Annotations:  map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7d4b9c8f6",
				UID: "6f1e0c55-2b0a-4a53-9d1c-0b8f4f1d2c3e", Controller: new(true), BlockOwnerDeletion: new(true),
			}},
		},
		Spec: corev1.PodSpec{
			Volumes: []corev1.Volume{{Name: "kube-api-access-x7k2p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
				Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: new(int64(3607))}},
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
				},
				DefaultMode: new(int32(420)),
			}}}},
			RestartPolicy:                 corev1.RestartPolicyAlways,
			TerminationGracePeriodSeconds: new(int64(30)),
			DNSPolicy:                     corev1.DNSClusterFirst,
			ServiceAccountName:            "default",
			SecurityContext:               &corev1.PodSecurityContext{},
			SchedulerName:                 corev1.DefaultSchedulerName,
			Tolerations: []corev1.Toleration{
				{Key: "node.kubernetes.io/not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &seconds},
				{Key: "node.kubernetes.io/unreachable", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &seconds},
			},
			Priority:           new(int32(0)),
			EnableServiceLinks: new(true),
			PreemptionPolicy:   new(corev1.PreemptLowerPriority),
		},
	}
	for i := range n {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{
			Name:  fmt.Sprintf("c%d", i),
			Image: fmt.Sprintf("%s:v%d", repo, i),
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP}},
			Env: []corev1.EnvVar{
				{Name: "LOG_LEVEL", Value: "info"},
				{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: "metadata.name"}}},
			},
			Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
				Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
			},
			VolumeMounts: []corev1.VolumeMount{{Name: "kube-api-access-x7k2p", ReadOnly: true, MountPath: "/var/run/secrets/kubernetes.io/serviceaccount"}},
			ReadinessProbe: &corev1.Probe{
				ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(8080), Scheme: corev1.URISchemeHTTP}},
				PeriodSeconds: 10, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 3,
			},
			TerminationMessagePath:   corev1.TerminationMessagePathDefault,
			TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			ImagePullPolicy:          corev1.PullIfNotPresent,
		})
	}
	raw, err := json.Marshal(&pod)
	if err != nil {
		b.Fatal(err)
	}
	return raw
}
