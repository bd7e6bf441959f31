package policy

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults, chosen so that an admission never waits long: the resolve budget fits well inside
// the API server's webhook timeout (the chart's default is 5s, the maximum 30s).
const (
	DefaultTimeout   = 2 * time.Second
	DefaultCacheTTL  = 5 * time.Minute
	DefaultCacheSize = 10000
	DefaultMaxStale  = 24 * time.Hour
	// A 315 MB first sight behind 50 Mbit/s takes Zot ~50 s; 5m covers a few GB.
	DefaultBackgroundTimeout = 5 * time.Minute
	DefaultBackgroundLookups = 4
)

// SetDefaults fills every field left out with its documented default.
func (p *Policy) SetDefaults() {
	if p.Mode == "" {
		p.Mode = ModeEnforce
	}
	if p.PullPolicy == "" {
		p.PullPolicy = corev1.PullIfNotPresent
	}
	r := &p.Resolve
	if r.Enabled == nil {
		r.Enabled = ptr(true)
	}
	if r.Timeout == nil {
		r.Timeout = &metav1.Duration{Duration: DefaultTimeout}
	}
	if r.CacheTTL == nil {
		r.CacheTTL = &metav1.Duration{Duration: DefaultCacheTTL}
	}
	if r.CacheSize == nil {
		r.CacheSize = ptr(DefaultCacheSize)
	}
	if r.MaxStale == nil {
		r.MaxStale = &metav1.Duration{Duration: DefaultMaxStale}
	}
	if r.OnError == "" {
		r.OnError = OnErrorKeep
	}
	if r.BackgroundTimeout == nil {
		r.BackgroundTimeout = &metav1.Duration{Duration: DefaultBackgroundTimeout}
	}
	if r.BackgroundLookups == nil {
		r.BackgroundLookups = ptr(DefaultBackgroundLookups)
	}
	p.Warm.setDefaults()
	for i := range p.Prepull {
		p.Prepull[i].setDefaults()
	}
}

func ptr[T any](v T) *T { return &v }
