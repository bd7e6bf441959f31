package policy

import (
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// WarmMode says what warming does with a mirror.
type WarmMode string

const (
	// WarmFetch reads every blob through the mirror, which fills a pull-through cache from its
	// upstream before a node asks.
	WarmFetch WarmMode = "Fetch"
	// WarmCheck only asks the mirror (HEAD) whether it holds every blob, and reports those it
	// lacks: for air-gapped mirrors, which have no upstream to fill from.
	WarmCheck WarmMode = "Check"
)

// Warm defaults: off; when on, gentle on the mirror and generous with slow upstreams.
const (
	DefaultWarmConcurrency = 2
	DefaultWarmStall       = 2 * time.Minute
	DefaultWarmBaseTimeout = 2 * time.Minute
	maxWarmConcurrency     = 32
)

var (
	// DefaultWarmBudget is the bytes per hour warming may read through one mirror.
	DefaultWarmBudget = resource.MustParse("200Gi")
	// DefaultWarmMinRate is the slowest read that is not given up on: a warm's deadline is its
	// base timeout plus its size at this rate.
	DefaultWarmMinRate = resource.MustParse("1Mi")
)

// Warm configures mirror warming: the controller reads each new mirror-pinned image through its
// mirror once, as soon as a pod asking for it is admitted, so the mirror holds it by the time a
// node pulls. Set at the top level, it is every mirror's default; on a mirror, fields that are
// set override it for that mirror.
type Warm struct {
	// Enabled turns warming on. Turn it off for a mirror that is not a pull-through cache.
	Enabled *bool `json:"enabled,omitempty"`
	// Mode is Fetch (read every blob) or Check (air-gapped: HEAD every blob and report).
	Mode WarmMode `json:"mode,omitempty"`
	// Concurrency is how many images are warmed through one mirror at once.
	Concurrency *int `json:"concurrency,omitempty"`
	// BudgetPerHour bounds the bytes read through one mirror in any hour; an image that does not
	// fit waits for the next hour, with an Event.
	BudgetPerHour *resource.Quantity `json:"budgetPerHour,omitempty"`
	// StallTimeout gives up on a warm that read no byte for this long.
	StallTimeout *metav1.Duration `json:"stallTimeout,omitempty"`
	// Timeout plus the image's size at MinBytesPerSecond is a warm's deadline.
	Timeout           *metav1.Duration   `json:"timeout,omitempty"`
	MinBytesPerSecond *resource.Quantity `json:"minBytesPerSecond,omitempty"`
}

func (w *Warm) setDefaults() {
	if w.Enabled == nil {
		w.Enabled = ptr(false)
	}
	if w.Mode == "" {
		w.Mode = WarmFetch
	}
	if w.Concurrency == nil {
		w.Concurrency = ptr(DefaultWarmConcurrency)
	}
	if w.BudgetPerHour == nil {
		w.BudgetPerHour = ptr(DefaultWarmBudget.DeepCopy())
	}
	if w.StallTimeout == nil {
		w.StallTimeout = &metav1.Duration{Duration: DefaultWarmStall}
	}
	if w.Timeout == nil {
		w.Timeout = &metav1.Duration{Duration: DefaultWarmBaseTimeout}
	}
	if w.MinBytesPerSecond == nil {
		w.MinBytesPerSecond = ptr(DefaultWarmMinRate.DeepCopy())
	}
}

// over returns the mirror's settings: w's fields where set, else the defaulted top-level ones.
func (w Warm) over(top Warm) Warm {
	out := top
	if w.Enabled != nil {
		out.Enabled = w.Enabled
	}
	if w.Mode != "" {
		out.Mode = w.Mode
	}
	if w.Concurrency != nil {
		out.Concurrency = w.Concurrency
	}
	if w.BudgetPerHour != nil {
		out.BudgetPerHour = w.BudgetPerHour
	}
	if w.StallTimeout != nil {
		out.StallTimeout = w.StallTimeout
	}
	if w.Timeout != nil {
		out.Timeout = w.Timeout
	}
	if w.MinBytesPerSecond != nil {
		out.MinBytesPerSecond = w.MinBytesPerSecond
	}
	return out
}

// validateWarm checks the fields that are set (a mirror's may leave any out).
func validateWarm(fld *field.Path, w *Warm) field.ErrorList {
	if w == nil {
		return nil
	}
	var errs field.ErrorList
	if w.Mode != "" && w.Mode != WarmFetch && w.Mode != WarmCheck {
		errs = append(errs, field.NotSupported(fld.Child("mode"), w.Mode, []WarmMode{WarmFetch, WarmCheck}))
	}
	if c := w.Concurrency; c != nil && (*c < 1 || *c > maxWarmConcurrency) {
		errs = append(errs, field.Invalid(fld.Child("concurrency"), *c, "must be between 1 and 32"))
	}
	if b := w.BudgetPerHour; b != nil && b.Sign() <= 0 {
		errs = append(errs, field.Invalid(fld.Child("budgetPerHour"), b.String(), "must be positive (turn warming off with enabled: false)"))
	}
	if r := w.MinBytesPerSecond; r != nil && r.Sign() <= 0 {
		errs = append(errs, field.Invalid(fld.Child("minBytesPerSecond"), r.String(), "must be positive"))
	}
	for name, d := range map[string]*metav1.Duration{"stallTimeout": w.StallTimeout, "timeout": w.Timeout} {
		if d != nil && d.Duration <= 0 {
			errs = append(errs, field.Invalid(fld.Child(name), d.Duration.String(), "must be positive"))
		}
	}
	return errs
}

// WarmSettings are one mirror's warm settings, defaulted and resolved.
type WarmSettings struct {
	Enabled       bool
	Mode          WarmMode
	Concurrency   int
	BudgetPerHour int64
	StallTimeout  time.Duration
	Timeout       time.Duration
	MinRate       int64 // bytes per second
}

// Deadline is how long a warm of size bytes may take.
func (s WarmSettings) Deadline(size int64) time.Duration {
	return s.Timeout + time.Duration(float64(size)/float64(max(s.MinRate, 1))*float64(time.Second))
}

func (w Warm) settings() WarmSettings {
	return WarmSettings{
		Enabled: *w.Enabled, Mode: w.Mode, Concurrency: *w.Concurrency, BudgetPerHour: w.BudgetPerHour.Value(),
		StallTimeout: w.StallTimeout.Duration, Timeout: w.Timeout.Duration, MinRate: w.MinBytesPerSecond.Value(),
	}
}

// Warm returns the warm settings of a mirror.
func (c *Compiled) Warm(m MirrorTarget) WarmSettings {
	var own Warm
	if m.Source.Warm != nil {
		own = *m.Source.Warm
	}
	return own.over(c.policy.Warm).settings()
}

// WarmEnabled reports whether any mirror is warmed.
func (c *Compiled) WarmEnabled() bool {
	for _, m := range c.onMirror {
		if c.Warm(m).Enabled {
			return true
		}
	}
	return false
}
