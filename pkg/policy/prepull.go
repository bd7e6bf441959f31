package policy

import (
	"fmt"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Limits on pre-pull groups. A group is one DaemonSet with one container per image: past a few
// dozen containers the pod is hard to read and every node pulls for a long time, and the name
// ends up in the DaemonSet's name and a label value (63 characters with the prefix).
const (
	MaxPrepullGroups     = 50
	MaxPrepullImages     = 32
	MaxPrepullNameLength = 40
)

// PrepullTaintKey is the default key of a group's startup taint.
const PrepullTaintKey = "pullgate.dev/prepull"

// DefaultStartupTaintTimeout is how long a node keeps a group's startup taint when its images do
// not arrive: 15 GB at 100 MB/s, unpacked, takes a few minutes; 20 leaves room for a slow link
// and still frees a node whose mirror is down the same hour. MaxStartupTaintTimeout bounds it:
// a node blocked for more than a day is an outage, not a pull.
const (
	DefaultStartupTaintTimeout = 20 * time.Minute
	MaxStartupTaintTimeout     = 24 * time.Hour
)

// Prepull is one group of nodes and the images they must hold before any pod asks for them.
type Prepull struct {
	// Name names the group, its DaemonSet and its metrics: a DNS label of at most 40 characters.
	Name string `json:"name"`
	// Images as pod authors write them; each goes through the same rewrite and pinning as an
	// admitted pod's image, so the node caches exactly the reference pods will ask for.
	Images []string `json:"images"`
	// NodeSelector, Tolerations, Affinity and PriorityClassName place the group's pods.
	NodeSelector      map[string]string   `json:"nodeSelector,omitempty"`
	Tolerations       []corev1.Toleration `json:"tolerations,omitempty"`
	Affinity          *corev1.Affinity    `json:"affinity,omitempty"`
	PriorityClassName string              `json:"priorityClassName,omitempty"`
	// Resources of each pre-pull container; the default requests almost nothing (the container
	// only sleeps).
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`
	// MaxUnavailable is how many nodes pull at once during a (re-)pin rollout, a number or a
	// percentage; it becomes the DaemonSet's maxSurge, so a node keeps the old image until the
	// new one is there.
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`
	// StartupTaint, when set, is a taint nodes join with (Karpenter's startupTaints, the
	// cluster-autoscaler's startup-taint prefix) so that no other pod lands before the images:
	// the group's pods tolerate it, and the controller removes it from a node once the group's
	// pod there is ready (every image pulled), or after StartupTaintTimeout with a Warning Event
	// on the node, so no node stays blocked.
	StartupTaint *StartupTaint `json:"startupTaint,omitempty"`
	// StartupTaintTimeout is how long a node may keep the taint, counted from when the
	// controller first sees it there; default 20m, only with startupTaint.
	StartupTaintTimeout *metav1.Duration `json:"startupTaintTimeout,omitempty"`
}

// StartupTaint is the taint a group removes; the key defaults to pullgate.dev/prepull and the
// effect to NoSchedule. The node's taint matches it by key and effect, whatever its value.
type StartupTaint struct {
	Key    string             `json:"key,omitempty"`
	Value  string             `json:"value,omitempty"`
	Effect corev1.TaintEffect `json:"effect,omitempty"`
}

// Matches says whether t is this startup taint (same key and effect).
func (s StartupTaint) Matches(t corev1.Taint) bool { return t.Key == s.Key && t.Effect == s.Effect }

// DefaultPrepullMaxUnavailable is one node pulling at a time.
var DefaultPrepullMaxUnavailable = intstr.FromInt32(1)

func (g *Prepull) setDefaults() {
	if g.MaxUnavailable == nil {
		v := DefaultPrepullMaxUnavailable
		g.MaxUnavailable = &v
	}
	if g.StartupTaint != nil {
		if g.StartupTaint.Key == "" {
			g.StartupTaint.Key = PrepullTaintKey
		}
		if g.StartupTaint.Effect == "" {
			g.StartupTaint.Effect = corev1.TaintEffectNoSchedule
		}
		if g.StartupTaintTimeout == nil {
			g.StartupTaintTimeout = &metav1.Duration{Duration: DefaultStartupTaintTimeout}
		}
	}
}

func validatePrepull(fld *field.Path, groups []Prepull) field.ErrorList {
	var errs field.ErrorList
	if len(groups) > MaxPrepullGroups {
		errs = append(errs, field.TooMany(fld, len(groups), MaxPrepullGroups))
	}
	names := sets.New[string]()
	for i := range groups {
		g := &groups[i]
		p := fld.Index(i)
		switch {
		case g.Name == "":
			errs = append(errs, field.Required(p.Child("name"), "names the group's DaemonSet and metrics"))
		case len(g.Name) > MaxPrepullNameLength:
			errs = append(errs, field.TooLong(p.Child("name"), g.Name, MaxPrepullNameLength))
		case names.Has(g.Name):
			errs = append(errs, field.Duplicate(p.Child("name"), g.Name))
		default:
			if msgs := validation.IsDNS1123Label(g.Name); len(msgs) > 0 {
				errs = append(errs, field.Invalid(p.Child("name"), g.Name, strings.Join(msgs, "; ")))
			}
		}
		names.Insert(g.Name)
		errs = append(errs, validatePrepullImages(p.Child("images"), g.Images)...)
		errs = append(errs, metav1validation.ValidateLabels(g.NodeSelector, p.Child("nodeSelector"))...)
		errs = append(errs, validateTolerations(p.Child("tolerations"), g.Tolerations)...)
		if g.PriorityClassName != "" {
			if msgs := validation.IsDNS1123Subdomain(g.PriorityClassName); len(msgs) > 0 {
				errs = append(errs, field.Invalid(p.Child("priorityClassName"), g.PriorityClassName, strings.Join(msgs, "; ")))
			}
		}
		errs = append(errs, validateMaxUnavailable(p.Child("maxUnavailable"), g.MaxUnavailable)...)
		errs = append(errs, validateStartupTaint(p, g)...)
	}
	return errs
}

func validateStartupTaint(p *field.Path, g *Prepull) field.ErrorList {
	var errs field.ErrorList
	if g.StartupTaint == nil {
		if g.StartupTaintTimeout != nil {
			errs = append(errs, field.Forbidden(p.Child("startupTaintTimeout"), "only with startupTaint"))
		}
		return errs
	}
	fld := p.Child("startupTaint")
	t := g.StartupTaint
	for _, msg := range validation.IsQualifiedName(t.Key) {
		errs = append(errs, field.Invalid(fld.Child("key"), t.Key, msg))
	}
	if t.Value != "" {
		for _, msg := range validation.IsValidLabelValue(t.Value) {
			errs = append(errs, field.Invalid(fld.Child("value"), t.Value, msg))
		}
	}
	switch t.Effect {
	case corev1.TaintEffectNoSchedule, corev1.TaintEffectNoExecute:
	default:
		errs = append(errs, field.NotSupported(fld.Child("effect"), t.Effect, []corev1.TaintEffect{corev1.TaintEffectNoSchedule, corev1.TaintEffectNoExecute}))
	}
	if d := g.StartupTaintTimeout; d != nil && (d.Duration <= 0 || d.Duration > MaxStartupTaintTimeout) {
		errs = append(errs, field.Invalid(p.Child("startupTaintTimeout"), d.Duration.String(),
			fmt.Sprintf("must be more than 0 and at most %s: the timeout is what frees a node whose images never arrive", MaxStartupTaintTimeout)))
	}
	return errs
}

func validatePrepullImages(fld *field.Path, images []string) field.ErrorList {
	if len(images) == 0 {
		return field.ErrorList{field.Required(fld, "a group pre-pulls at least one image")}
	}
	var errs field.ErrorList
	if len(images) > MaxPrepullImages {
		errs = append(errs, field.TooMany(fld, len(images), MaxPrepullImages))
	}
	seen := map[string]int{}
	for i, img := range images {
		ref, err := name.ParseReference(img)
		if err != nil {
			errs = append(errs, field.Invalid(fld.Index(i), img, "not an image reference: "+err.Error()))
			continue
		}
		if j, dup := seen[ref.Name()]; dup {
			errs = append(errs, field.Duplicate(fld.Index(i), fmt.Sprintf("%s (same image as images[%d])", img, j)))
			continue
		}
		seen[ref.Name()] = i
	}
	return errs
}

func validateTolerations(fld *field.Path, tols []corev1.Toleration) field.ErrorList {
	var errs field.ErrorList
	for i, t := range tols {
		p := fld.Index(i)
		if t.Key != "" {
			for _, msg := range validation.IsQualifiedName(t.Key) {
				errs = append(errs, field.Invalid(p.Child("key"), t.Key, msg))
			}
		}
		switch t.Operator {
		case "", corev1.TolerationOpEqual:
			if t.Key == "" {
				errs = append(errs, field.Invalid(p.Child("operator"), t.Operator, "an empty key needs operator Exists"))
			}
		case corev1.TolerationOpExists:
			if t.Value != "" {
				errs = append(errs, field.Invalid(p.Child("value"), t.Value, "must be empty when operator is Exists"))
			}
		default:
			errs = append(errs, field.NotSupported(p.Child("operator"), t.Operator, []corev1.TolerationOperator{corev1.TolerationOpEqual, corev1.TolerationOpExists}))
		}
		switch t.Effect {
		case "", corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		default:
			errs = append(errs, field.NotSupported(p.Child("effect"), t.Effect, []corev1.TaintEffect{corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute}))
		}
	}
	return errs
}

// validateMaxUnavailable: at least one node, or a percentage of 1-100; 0 would never roll.
func validateMaxUnavailable(fld *field.Path, v *intstr.IntOrString) field.ErrorList {
	if v == nil {
		return nil
	}
	if v.Type == intstr.Int {
		if v.IntVal < 1 {
			return field.ErrorList{field.Invalid(fld, v.IntVal, "must be at least 1: a rollout with no node pulling never finishes")}
		}
		return nil
	}
	s, ok := strings.CutSuffix(v.StrVal, "%")
	var pct int
	if _, err := fmt.Sscanf(s, "%d", &pct); !ok || err != nil || fmt.Sprint(pct) != s || pct < 1 || pct > 100 {
		return field.ErrorList{field.Invalid(fld, v.StrVal, "must be a number of nodes, or a percentage from 1% to 100%")}
	}
	return nil
}
