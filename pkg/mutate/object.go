package mutate

import (
	"errors"

	"github.com/go-json-experiment/json/jsontext"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/pullgate/pullgate/internal/kjson"
)

// DecodedObject is a review's object or oldObject decoded in the same pass as the review,
// straight into the fields pullgate reads, where a RawExtension would copy the bytes to be
// decoded again. It rides in the request's RawExtension.Object. It refuses what it could not
// decode exactly as the raw path would (not a pod, a second object member), and the caller
// then decodes the review the raw way, so answers never differ.
type DecodedObject struct {
	pod  *podView // nil for null
	seen bool
}

var (
	_ runtime.Object = (*DecodedObject)(nil)
	// errSecondObject stops a decode that met the same member twice.
	errSecondObject = errors.New("the object appears twice")
)

// UnmarshalJSONFrom reads one JSON value: null, or a pod.
func (o *DecodedObject) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	if o.seen {
		return errSecondObject
	}
	o.seen = true
	if dec.PeekKind() == 'n' {
		_, err := dec.ReadToken()
		return err
	}
	pod := new(podView)
	if err := kjson.UnmarshalDecode(dec, pod); err != nil {
		return err
	}
	o.pod = pod
	return nil
}

// Seen reports whether the member was present, null or not: absent, the request has no object
// at all, which the raw path tells apart from null the same way (no bytes, or "null").
func (o *DecodedObject) Seen() bool { return o.seen }

// GetObjectKind is the pod's apiVersion and kind.
func (o *DecodedObject) GetObjectKind() schema.ObjectKind {
	if o.pod == nil {
		return schema.EmptyObjectKind
	}
	return &o.pod.TypeMeta
}

// DeepCopyObject copies the decoded fields.
func (o *DecodedObject) DeepCopyObject() runtime.Object {
	out := &DecodedObject{seen: o.seen}
	if o.pod == nil {
		return out
	}
	p := *o.pod
	if p.Metadata.Annotations != nil {
		p.Metadata.Annotations = make(map[string]string, len(o.pod.Metadata.Annotations))
		for k, v := range o.pod.Metadata.Annotations {
			p.Metadata.Annotations[k] = v
		}
	}
	p.Metadata.Labels = p.Metadata.Labels.Clone()
	p.Metadata.OwnerReferences = p.Metadata.OwnerReferences.Clone()
	p.Spec.InitContainers = append([]container(nil), p.Spec.InitContainers...)
	p.Spec.Containers = append([]container(nil), p.Spec.Containers...)
	p.Spec.EphemeralContainers = append([]container(nil), p.Spec.EphemeralContainers...)
	p.Spec.ImagePullSecrets = append(p.Spec.ImagePullSecrets[:0:0], p.Spec.ImagePullSecrets...)
	p.Spec.Volumes = append([]volume(nil), p.Spec.Volumes...)
	for i, v := range p.Spec.Volumes {
		if v.Image != nil {
			img := *v.Image
			p.Spec.Volumes[i].Image = &img
		}
	}
	out.pod = &p
	return out
}

// decodedPod is the pod of a decoded object, checked as decodePod checks raw bytes.
func decodedPod(o *DecodedObject, what string) (*podView, error) {
	if o.pod == nil {
		return nil, emptyObject(what)
	}
	return o.pod, checkKind(o.pod, what)
}
