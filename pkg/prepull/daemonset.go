package prepull

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/pullgate/pullgate/pkg/policy"
)

// Labels and annotations on the objects the controller owns.
const (
	// ManagedByLabel selects every DaemonSet (and pod) the controller owns, and nothing else:
	// a DaemonSet with it whose group left the policy is deleted.
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedBy      = "pullgate-controller"
	// GroupLabel names the policy group.
	GroupLabel = "pullgate.dev/prepull-group"
	// ImagesAnnotation lists the images as the policy writes them, in container order, so the
	// last pinned reference of each survives a restart of the controller (it is in the spec).
	ImagesAnnotation = "pullgate.dev/images"
	// SpecHashAnnotation is the hash of the desired object; the controller updates the
	// DaemonSet only when it changes.
	SpecHashAnnotation = "pullgate.dev/spec-hash"
	// RepinnedAnnotation is when the pinned references last changed (RFC 3339).
	RepinnedAnnotation = "pullgate.dev/repinned-at"
)

// sleeperDir is where the init container puts the sleeper, and sleeperPath the copy.
const (
	sleeperDir  = "/pullgate"
	sleeperPath = sleeperDir + "/sleeper"
	// sleeperBinary is the sleeper's path in pullgate's own image (cmd/sleeper, about 1.4 MB;
	// the webhook binary would be 35-50 MB in every pre-pull pod).
	sleeperBinary = "/sleeper"
	// nonRoot is distroless's nonroot user, which every container runs as: the sleeper needs
	// no privilege, whatever user the pre-pulled image names.
	nonRoot = 65532
)

// Settings are what the DaemonSet needs besides the policy group.
type Settings struct {
	Namespace string
	// NamePrefix is prepended to the group name (the chart passes "<release>-prepull-").
	NamePrefix string
	// SleeperImage is pullgate's own image: its init container copies the sleeper from it.
	SleeperImage string
	// PullSecrets are the policy's imagePullSecrets (for the mirror) and pullgate's own.
	PullSecrets []string
	// Owner, when set, is the controller's Deployment: deleting it (helm uninstall) deletes
	// every DaemonSet through the garbage collector.
	Owner *metav1.OwnerReference
}

// Name is the DaemonSet's name for a group.
func (s Settings) Name(group string) string { return s.NamePrefix + group }

// DefaultResources are small: the container only sleeps (cmd/sleeper uses about 1 MiB); the limit leaves
// the Go runtime room.
var DefaultResources = corev1.ResourceRequirements{
	Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
	Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")},
}

// DaemonSet is the group's DaemonSet: one container per pinned image, each running the sleeper
// copied from pullgate's image, so images without a shell (distroless, scratch) work; a running
// container also keeps its image safe from the kubelet's image garbage collection. The rollout
// surges (maxSurge = the group's maxUnavailable, maxUnavailable 0): the old pod, holding the old
// image, stays on a node until the new pod, with the new image pulled, is ready.
func DaemonSet(g policy.Prepull, images []Pinned, s Settings) *appsv1.DaemonSet {
	labels := map[string]string{ManagedByLabel: ManagedBy, GroupLabel: g.Name}
	sources := make([]string, len(images))
	res := DefaultResources
	if g.Resources != nil {
		res = *g.Resources
	}
	mount := []corev1.VolumeMount{{Name: "sleeper", MountPath: sleeperDir, ReadOnly: true}}
	containers := make([]corev1.Container, len(images))
	for i, img := range images {
		sources[i] = img.Source
		containers[i] = corev1.Container{
			Name:            "image-" + strconv.Itoa(i),
			Image:           img.Ref,
			ImagePullPolicy: corev1.PullIfNotPresent,
			Command:         []string{sleeperPath},
			Resources:       *res.DeepCopy(),
			SecurityContext: restricted(),
			VolumeMounts:    mount,
		}
	}
	list, _ := json.Marshal(sources) // strings always marshal
	surge := policy.DefaultPrepullMaxUnavailable
	if g.MaxUnavailable != nil {
		surge = *g.MaxUnavailable
	}
	zero := intstr.FromInt32(0)
	var secrets []corev1.LocalObjectReference
	seen := map[string]bool{}
	for _, n := range s.PullSecrets {
		if !seen[n] {
			seen[n] = true
			secrets = append(secrets, corev1.LocalObjectReference{Name: n})
		}
	}
	tolerations := g.Tolerations
	if t := g.StartupTaint; t != nil {
		// The group's pods are what the taint waits for: they must land while it is there.
		tolerations = append(slices.Clone(tolerations), corev1.Toleration{Key: t.Key, Operator: corev1.TolerationOpExists, Effect: t.Effect})
	}
	ds := &appsv1.DaemonSet{
		TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        s.Name(g.Name),
			Namespace:   s.Namespace,
			Labels:      labels,
			Annotations: map[string]string{ImagesAnnotation: string(list)},
		},
		Spec: appsv1.DaemonSetSpec{
			Selector:             &metav1.LabelSelector{MatchLabels: labels},
			RevisionHistoryLimit: ptr(int32(3)),
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
				Type:          appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: &zero, MaxSurge: &surge},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					InitContainers: []corev1.Container{{
						Name:            "sleeper",
						Image:           s.SleeperImage,
						ImagePullPolicy: corev1.PullIfNotPresent,
						Command:         []string{sleeperBinary, "--install", sleeperPath},
						Resources:       DefaultResources,
						SecurityContext: restricted(),
						VolumeMounts:    []corev1.VolumeMount{{Name: "sleeper", MountPath: sleeperDir}},
					}},
					Containers:                    containers,
					ImagePullSecrets:              secrets,
					NodeSelector:                  g.NodeSelector,
					Tolerations:                   tolerations,
					Affinity:                      g.Affinity,
					PriorityClassName:             g.PriorityClassName,
					AutomountServiceAccountToken:  ptr(false),
					EnableServiceLinks:            ptr(false),
					TerminationGracePeriodSeconds: ptr(int64(10)),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr(true),
						RunAsUser:      ptr(int64(nonRoot)),
						RunAsGroup:     ptr(int64(nonRoot)),
						FSGroup:        ptr(int64(nonRoot)),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Volumes: []corev1.Volume{{Name: "sleeper", VolumeSource: corev1.VolumeSource{
						EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr(resource.MustParse("8Mi"))},
					}}},
				},
			},
		},
	}
	if s.Owner != nil {
		ds.OwnerReferences = []metav1.OwnerReference{*s.Owner}
	}
	ds.Annotations[SpecHashAnnotation] = SpecHash(ds)
	return ds
}

// SpecHash hashes what the controller sets on a DaemonSet (labels, owner, images annotation and
// spec), so it can tell whether the stored object needs an update without diffing the defaults
// the API server added.
func SpecHash(ds *appsv1.DaemonSet) string {
	b, _ := json.Marshal([]any{ds.Labels, ds.OwnerReferences, ds.Annotations[ImagesAnnotation], ds.Spec})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// LastPinned returns, by source image, the references a stored DaemonSet pins: what the group
// keeps when a tag cannot be resolved.
func LastPinned(ds *appsv1.DaemonSet) map[string]string {
	out := map[string]string{}
	if ds == nil {
		return out
	}
	var sources []string
	if json.Unmarshal([]byte(ds.Annotations[ImagesAnnotation]), &sources) != nil {
		return out
	}
	cs := ds.Spec.Template.Spec.Containers
	for i, src := range sources {
		if i < len(cs) {
			out[src] = cs[i].Image
		}
	}
	return out
}

func restricted() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		RunAsNonRoot:             ptr(true),
		AllowPrivilegeEscalation: ptr(false),
		ReadOnlyRootFilesystem:   ptr(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func ptr[T any](v T) *T { return &v }
