package mutate

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// listKind names the lists of a PodSpec that hold images.
type listKind string

const (
	initContainers      listKind = "initContainers"
	containers          listKind = "containers"
	ephemeralContainers listKind = "ephemeralContainers"
	volumes             listKind = "volumes"
)

// site is one image field of a pod: where it is (for messages and for patches) and what it holds.
type site struct {
	kind       listKind
	index      int
	name       string // container or volume name
	image      string
	pullPolicy corev1.PullPolicy
}

// entry is the part of a container or image volume that pullgate reads.
type entry struct {
	name, image string
	pullPolicy  corev1.PullPolicy
}

// sites lists every image field of a pod spec, in a fixed order.
func sites(spec *corev1.PodSpec) []site {
	lists := []struct {
		kind    listKind
		entries []entry
	}{
		{initContainers, containerEntries(spec.InitContainers)},
		{containers, containerEntries(spec.Containers)},
		{ephemeralContainers, ephemeralEntries(spec.EphemeralContainers)},
		{volumes, volumeEntries(spec.Volumes)},
	}
	var out []site
	for _, l := range lists {
		for i, e := range l.entries {
			if l.kind == volumes && e.name == "" && e.image == "" {
				continue // not an image volume
			}
			out = append(out, site{kind: l.kind, index: i, name: e.name, image: e.image, pullPolicy: e.pullPolicy})
		}
	}
	return out
}

func containerEntries(cs []corev1.Container) []entry {
	out := make([]entry, len(cs))
	for i, c := range cs {
		out[i] = entry{c.Name, c.Image, c.ImagePullPolicy}
	}
	return out
}

func ephemeralEntries(cs []corev1.EphemeralContainer) []entry {
	out := make([]entry, len(cs))
	for i, c := range cs {
		out[i] = entry{c.Name, c.Image, c.ImagePullPolicy}
	}
	return out
}

// volumeEntries keeps indexes aligned with spec.volumes; non-image volumes are left empty.
func volumeEntries(vs []corev1.Volume) []entry {
	out := make([]entry, len(vs))
	for i, v := range vs {
		if v.Image != nil {
			out[i] = entry{v.Name, v.Image.Reference, v.Image.PullPolicy}
		}
	}
	return out
}

// field is the human-readable path, as API server messages write it.
func (s site) field() string {
	if s.kind == volumes {
		return fmt.Sprintf("spec.volumes[%d].image.reference", s.index)
	}
	return fmt.Sprintf("spec.%s[%d].image", s.kind, s.index)
}

// imagePath is the JSON pointer of the image.
func (s site) imagePath() string {
	if s.kind == volumes {
		return fmt.Sprintf("/spec/volumes/%d/image/reference", s.index)
	}
	return fmt.Sprintf("/spec/%s/%d/image", s.kind, s.index)
}

// pullPolicyPath is the JSON pointer of the image's pull policy.
func (s site) pullPolicyPath() string {
	if s.kind == volumes {
		return fmt.Sprintf("/spec/volumes/%d/image/pullPolicy", s.index)
	}
	return fmt.Sprintf("/spec/%s/%d/imagePullPolicy", s.kind, s.index)
}

func (s site) pullPolicyField() string {
	if s.kind == volumes {
		return fmt.Sprintf("spec.volumes[%d].image.pullPolicy", s.index)
	}
	return fmt.Sprintf("spec.%s[%d].imagePullPolicy", s.kind, s.index)
}
