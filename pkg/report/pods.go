package report

import (
	"encoding/json"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullgate/pullgate/pkg/mutate"
)

// podJSON is the pod as admission would see it: the planner reads its JSON.
func podJSON(pod *corev1.Pod) ([]byte, error) {
	raw, err := json.Marshal(pod)
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return raw, nil
}

// keptAnnotations are the annotations the planner and the findings read.
var keptAnnotations = []string{mutate.SkipAnnotation, mutate.OriginalAnnotation, corev1.MirrorPodAnnotationKey}

// Slim keeps of a pod only what a scan reads: name, namespace, owners, the pod-template-hash
// label, pullgate's annotations, and each image field with its pull policy and the pull secrets.
// It is the pod informer's transform: 10,000 full pods would hold most of the controller's
// memory for env, probes, resources and status it never reads.
func Slim(obj any) (any, error) {
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil // a tombstone, or another type: left as it is
	}
	out := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name:            pod.Name,
			Namespace:       pod.Namespace,
			UID:             pod.UID,
			ResourceVersion: pod.ResourceVersion,
			OwnerReferences: pod.OwnerReferences,
		},
		Spec: corev1.PodSpec{ImagePullSecrets: pod.Spec.ImagePullSecrets},
	}
	if h, ok := pod.Labels["pod-template-hash"]; ok {
		out.Labels = map[string]string{"pod-template-hash": h}
	}
	for _, k := range keptAnnotations {
		if v, ok := pod.Annotations[k]; ok {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	slim := func(cs []corev1.Container) []corev1.Container {
		if cs == nil {
			return nil
		}
		o := make([]corev1.Container, len(cs))
		for i, c := range cs {
			o[i] = corev1.Container{Name: c.Name, Image: c.Image, ImagePullPolicy: c.ImagePullPolicy}
		}
		return o
	}
	out.Spec.InitContainers = slim(pod.Spec.InitContainers)
	out.Spec.Containers = slim(pod.Spec.Containers)
	if pod.Spec.EphemeralContainers != nil {
		out.Spec.EphemeralContainers = make([]corev1.EphemeralContainer, len(pod.Spec.EphemeralContainers))
		for i, c := range pod.Spec.EphemeralContainers {
			out.Spec.EphemeralContainers[i].EphemeralContainerCommon = corev1.EphemeralContainerCommon{Name: c.Name, Image: c.Image, ImagePullPolicy: c.ImagePullPolicy}
		}
	}
	// Volumes keep their indexes (the planner's field paths name them) but only image sources.
	if pod.Spec.Volumes != nil {
		out.Spec.Volumes = make([]corev1.Volume, len(pod.Spec.Volumes))
		for i, v := range pod.Spec.Volumes {
			out.Spec.Volumes[i].Name = v.Name
			if v.Image != nil {
				img := *v.Image
				out.Spec.Volumes[i].Image = &img
			}
		}
	}
	return out, nil
}

// TopOwner is the pod's top-level owner as far as the pod tells: a ReplicaSet named after its
// pod-template-hash label is a Deployment's; a bare pod is its own.
func TopOwner(pod *corev1.Pod) Workload {
	for _, o := range pod.OwnerReferences {
		if o.Controller == nil || !*o.Controller {
			continue
		}
		if o.Kind == "ReplicaSet" {
			if h := pod.Labels["pod-template-hash"]; h != "" && strings.HasSuffix(o.Name, "-"+h) {
				return Workload{APIVersion: "apps/v1", Kind: "Deployment", Name: strings.TrimSuffix(o.Name, "-"+h)}
			}
		}
		return Workload{APIVersion: o.APIVersion, Kind: o.Kind, Name: o.Name}
	}
	return Workload{APIVersion: "v1", Kind: "Pod", Name: pod.Name}
}
