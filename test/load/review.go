package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// review renders AdmissionReview request bodies for a pod with n containers. The JSON is
// marshalled once with placeholders and then only concatenated, so that making a body costs
// the load generator next to nothing: it shares the cores with the webhook it measures.
type review struct {
	parts [][]byte // text between placeholders: uid, image 0, image 1, ...
	n     int
}

const placeholder = "@@PULLGATE-LOAD@@"

func newReview(containers int) (*review, error) {
	images := make([]string, containers)
	for i := range images {
		images[i] = placeholder
	}
	raw, err := json.Marshal(podFor(images))
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:             placeholder,
			Kind:            metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:        metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			RequestKind:     &metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			RequestResource: &metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace:       "apps",
			Operation:       admissionv1.Create,
			UserInfo: authenticationv1.UserInfo{
				Username: "system:serviceaccount:kube-system:replicaset-controller",
				UID:      "0d4c3a57-5c1c-4d0e-9a43-1f4e3b0a7c21",
				Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"},
			},
			Object:  runtime.RawExtension{Raw: raw},
			DryRun:  new(false),
			Options: runtime.RawExtension{Raw: []byte(`{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}`)},
		},
	})
	if err != nil {
		return nil, err
	}
	parts := bytes.Split(body, []byte(placeholder))
	if len(parts) != containers+2 {
		return nil, fmt.Errorf("review template: %d placeholders, want %d", len(parts)-1, containers+1)
	}
	return &review{parts: parts, n: containers}, nil
}

// body renders one request: uid from seq, and one image per container.
func (r *review) body(seq uint64, images ...string) []byte {
	size := 20
	for _, p := range r.parts {
		size += len(p)
	}
	for _, img := range images {
		size += len(img)
	}
	b := make([]byte, 0, size)
	b = append(b, r.parts[0]...)
	b = strconv.AppendUint(b, seq, 10)
	for i, img := range images {
		b = append(b, r.parts[i+1]...)
		b = append(b, img...)
	}
	return append(b, r.parts[len(r.parts)-1]...)
}

// pinned checks a pullgate answer: allowed, and a JSON patch that pins want images to
// digests, without warnings (a warning means an image was left unpinned).
func pinned(want int) func([]byte) error {
	return func(body []byte) error {
		var ar admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &ar); err != nil || ar.Response == nil {
			return fmt.Errorf("not an AdmissionReview response: %.80q", body)
		}
		r := ar.Response
		switch {
		case !r.Allowed:
			return fmt.Errorf("denied: %v", r.Result)
		case len(r.Warnings) > 0:
			return fmt.Errorf("warning: %s", r.Warnings[0])
		}
		// Patch is the JSON patch itself: encoding/json undoes the base64 of a []byte field.
		if n := bytes.Count(r.Patch, []byte("@sha256:")); n != want {
			return fmt.Errorf("%d images pinned, want %d", n, want)
		}
		return nil
	}
}

// allowed checks the floor's answer.
func allowed(body []byte) error {
	var ar admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &ar); err != nil || ar.Response == nil || !ar.Response.Allowed {
		return fmt.Errorf("not an allowing AdmissionReview: %.80q", body)
	}
	return nil
}

// podFor is a Deployment's pod as the API server hands it to webhooks after defaulting: owner
// reference, resources, probes, the projected service-account volume, default tolerations.
// Decoding it is a real part of a webhook's cost, which an empty pod would hide.
func podFor(images []string) *corev1.Pod {
	seconds := int64(300)
	pod := &corev1.Pod{
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
	for i, image := range images {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{
			Name:  "c" + strconv.Itoa(i),
			Image: image,
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
	return pod
}
