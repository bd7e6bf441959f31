package mutate

import (
	"strconv"

	"github.com/go-json-experiment/json/jsontext"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullgate/pullgate/internal/kjson"
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

// podView is the part of a Pod pullgate reads. Decoding into it rather than corev1.Pod lets
// encoding/json skip env, resources, probes and the rest without building them: the load test's
// CPU profile showed decoding the full Pod as the largest cost of an admission. Fields pullgate
// does not read are not checked either; the API server validates the pod anyway.
type podView struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        podMeta `json:"metadata"`
	Spec            podSpec `json:"spec"`
}

// podMeta is what pullgate reads of a pod's metadata, and whether the pod has a metadata object
// at all: the patch adds OriginalAnnotation into it, and a JSON patch cannot add into nothing.
type podMeta struct {
	podMetaFields
	present bool
}

type podMetaFields struct {
	Name         string            `json:"name"`
	GenerateName string            `json:"generateName"`
	Annotations  map[string]string `json:"annotations"`
	// Labels and OwnerReferences serve exclude.podSelector and exclude.owners. Kept as raw JSON
	// and decoded only when the policy has such exclusions: most do not, and a map and a slice
	// of strings per admission is a tenth of what the warm path allocates.
	Labels          jsontext.Value `json:"labels"`
	OwnerReferences jsontext.Value `json:"ownerReferences"`
}

// ownerRef is what pullgate reads of an owner reference: its kind, by group.
type ownerRef struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// UnmarshalJSONFrom decodes the fields as the default would (null is the zero value; a second
// member merges into the first) and notes that an object was there.
func (m *podMeta) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	if dec.PeekKind() == 'n' {
		*m = podMeta{}
		_, err := dec.ReadToken()
		return err
	}
	if err := kjson.UnmarshalDecode(dec, &m.podMetaFields); err != nil {
		return err
	}
	m.present = true
	return nil
}

// podSpec holds the image fields of a PodSpec, and the pull secrets.
type podSpec struct {
	InitContainers      []container                   `json:"initContainers"`
	Containers          []container                   `json:"containers"`
	EphemeralContainers []container                   `json:"ephemeralContainers"`
	Volumes             []volume                      `json:"volumes"`
	ImagePullSecrets    []corev1.LocalObjectReference `json:"imagePullSecrets"`
}

// container is what pullgate reads of a container or an ephemeral container.
type container struct {
	Name            string            `json:"name"`
	Image           string            `json:"image"`
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy"`
}

// volume is what pullgate reads of a volume: only image volumes matter.
type volume struct {
	Name  string                    `json:"name"`
	Image *corev1.ImageVolumeSource `json:"image"`
}

// sites lists every image field of a pod spec, in a fixed order.
func sites(spec *podSpec) []site {
	lists := []struct {
		kind    listKind
		entries []container
	}{
		{initContainers, spec.InitContainers},
		{containers, spec.Containers},
		{ephemeralContainers, spec.EphemeralContainers},
		{volumes, volumeEntries(spec.Volumes)},
	}
	var out []site
	for _, l := range lists {
		for i, e := range l.entries {
			if l.kind == volumes && e.Name == "" && e.Image == "" {
				continue // not an image volume
			}
			out = append(out, site{kind: l.kind, index: i, name: e.Name, image: e.Image, pullPolicy: e.ImagePullPolicy})
		}
	}
	return out
}

// volumeEntries keeps indexes aligned with spec.volumes; non-image volumes are left empty.
func volumeEntries(vs []volume) []container {
	out := make([]container, len(vs))
	for i, v := range vs {
		if v.Image != nil {
			out[i] = container{Name: v.Name, Image: v.Image.Reference, ImagePullPolicy: v.Image.PullPolicy}
		}
	}
	return out
}

// field is the human-readable path of the image, as API server messages write it.
func (s site) field() string { return s.dotted("image", "image.reference") }

// pullPolicyField is the human-readable path of the image's pull policy.
func (s site) pullPolicyField() string { return s.dotted("imagePullPolicy", "image.pullPolicy") }

// imagePath is the JSON pointer of the image.
func (s site) imagePath() string { return s.pointer("image", "image/reference") }

// pullPolicyPath is the JSON pointer of the image's pull policy.
func (s site) pullPolicyPath() string { return s.pointer("imagePullPolicy", "image/pullPolicy") }

// dotted is spec.<list>[<index>].<member>, the member named as in a container or a volume.
func (s site) dotted(container, volume string) string {
	return "spec." + string(s.kind) + "[" + strconv.Itoa(s.index) + "]." + s.member(container, volume)
}

// pointer is /spec/<list>/<index>/<member>.
func (s site) pointer(container, volume string) string {
	return "/spec/" + string(s.kind) + "/" + strconv.Itoa(s.index) + "/" + s.member(container, volume)
}

func (s site) member(container, volume string) string {
	if s.kind == volumes {
		return volume
	}
	return container
}
