package warm

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/policy"
)

// Defaults for the zero values of Queue's fields.
const (
	// DefaultSettle is how long a new digest waits before its warm starts. A pod that a node
	// takes within it is pulled by that node, which fills the mirror itself: a warm beside it
	// would only make a pull-through mirror fetch the blobs twice (Distribution sends a request
	// for a blob it is still filling straight upstream). A pod waiting for a node (the
	// autoscaler case) waits minutes; these seconds cost nothing there.
	DefaultSettle = 3 * time.Second
	// DefaultAttempts bounds the tries of one digest: 429s, 5xx, timeouts and stalls are tried
	// again after a backoff, the rest are final.
	DefaultAttempts = 4
	// DefaultBackoff is the pause before the first retry, doubled for each next one up to
	// maxBackoff; a registry's Retry-After, when longer, wins.
	DefaultBackoff = 30 * time.Second
	maxBackoff     = 15 * time.Minute
	// maxItems bounds the digests remembered; past it, finished ones are forgotten (a digest
	// seen again is then warmed again, which a warm mirror answers quickly).
	maxItems = 50000
	// maxPods bounds the pods kept per digest, for Events and the node check.
	maxPods = 8
	// maxNote keeps an Event's message within what the API stores.
	maxNote = 900
)

// Outcomes the queue adds to contract's.
const (
	outcomeWarmed      = "warmed"
	outcomeChecked     = "checked"
	outcomeStalled     = "stalled"
	outcomeDeadline    = "deadline"
	outcomeOverBudget  = "over_budget"
	outcomeNodePulling = "node_pulling"
)

var (
	errStalled  = errors.New("no progress")
	errDeadline = errors.New("deadline")
)

// PolicySource hands out the policy in force.
type PolicySource interface {
	Current() *policy.Compiled
}

// Pod is what the queue knows of a pod that asks for a digest.
type Pod struct {
	Namespace, Name string
	UID             types.UID
	// Bound: the scheduler has placed the pod; its node pulls the image itself.
	Bound bool
}

// Queue warms each mirror-pinned digest once. Set the fields, then Run; Add and MarkWarm are
// safe for concurrent use.
type Queue struct {
	Warmer contract.Warmer
	Policy PolicySource
	// Platforms returns the platforms the cluster's nodes run; nil or empty warms all of an
	// index's platforms.
	Platforms func() []contract.Platform
	Events    events.EventRecorder // nil: no Events

	Settle   time.Duration // zero: DefaultSettle
	Attempts int           // zero: DefaultAttempts
	Backoff  time.Duration // zero: DefaultBackoff

	mu    sync.Mutex
	items map[string]*item
	lanes map[string]*lane // by mirror host
	wake  chan struct{}
	once  sync.Once
}

type state int

const (
	queued state = iota
	running
	done
)

// item is one digest.
type item struct {
	key      string // repository@digest, normalized
	ref      name.Digest
	image    string // as the first pod has it, for Events
	host     string // mirror host
	pods     []Pod
	state    state
	attempts int
	due      time.Time
}

// lane is one mirror host: its queue, running warms and byte budget.
type lane struct {
	pending []*item
	running int
	window  time.Time // start of the current budget hour
	spent   int64
}

func (q *Queue) init() {
	q.once.Do(func() {
		q.items = map[string]*item{}
		q.lanes = map[string]*lane{}
		q.wake = make(chan struct{}, 1)
	})
}

func (q *Queue) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// target returns the mirror digest image names and its mirror's warm settings, when image is
// pinned by digest to a mirror that is warmed.
func (q *Queue) target(image string) (name.Digest, policy.MirrorTarget, policy.WarmSettings, bool) {
	pol := q.Policy.Current()
	if pol == nil {
		return name.Digest{}, policy.MirrorTarget{}, policy.WarmSettings{}, false
	}
	ref, err := name.NewDigest(image)
	if err != nil {
		return name.Digest{}, policy.MirrorTarget{}, policy.WarmSettings{}, false
	}
	m, ok := pol.OnMirror(ref.Context().RegistryStr(), ref.Context().RepositoryStr())
	if !ok {
		return name.Digest{}, policy.MirrorTarget{}, policy.WarmSettings{}, false
	}
	s := pol.Warm(m)
	return ref, m, s, s.Enabled
}

// locate finds the item of image's digest (nil when not seen yet) and locks q.mu, which the
// caller unlocks; ok is false, and nothing locked, when the image is not warmed.
func (q *Queue) locate(image string) (ref name.Digest, host, key string, it *item, ok bool) {
	ref, m, _, ok := q.target(image)
	if !ok {
		return ref, "", "", nil, false
	}
	q.init()
	key = ref.Context().Name() + "@" + ref.DigestStr()
	q.mu.Lock()
	return ref, m.Host, key, q.items[key], true
}

// Add notes that pod asks for image. A mirror-pinned digest not seen before is queued; one
// queued or being warmed gains the pod; one already warm is left alone.
func (q *Queue) Add(image string, pod Pod) {
	ref, host, k, it, ok := q.locate(image)
	if !ok {
		return
	}
	defer q.mu.Unlock()
	if it == nil {
		q.trim()
		it = &item{key: k, ref: ref, image: image, host: host, due: time.Now().Add(or(q.Settle, DefaultSettle))}
		q.items[k] = it
		l := q.lane(host)
		l.pending = append(l.pending, it)
		warmQueued.WithLabelValues(host).Inc()
		defer q.poke()
	}
	if it.state == done {
		return
	}
	if i := slices.IndexFunc(it.pods, func(p Pod) bool { return p.UID == pod.UID }); i >= 0 {
		it.pods[i] = pod
	} else if len(it.pods) < maxPods {
		it.pods = append(it.pods, pod)
	}
}

// MarkWarm notes that a node pulled image (a pod with it runs): the mirror has it, and a
// queued warm of it is dropped.
func (q *Queue) MarkWarm(image string) {
	ref, host, k, it, ok := q.locate(image)
	if !ok {
		return
	}
	defer q.mu.Unlock()
	if it == nil {
		q.trim()
		q.items[k] = &item{key: k, ref: ref, host: host, state: done}
		return
	}
	if it.state == queued {
		q.unqueue(it)
		it.state = done
	}
}

// unqueue removes a queued item from its lane. Called with q.mu held.
func (q *Queue) unqueue(it *item) {
	l := q.lane(it.host)
	if i := slices.Index(l.pending, it); i >= 0 {
		l.pending = slices.Delete(l.pending, i, i+1)
		warmQueued.WithLabelValues(it.host).Dec()
	}
}

func (q *Queue) lane(host string) *lane {
	l, ok := q.lanes[host]
	if !ok {
		l = &lane{}
		q.lanes[host] = l
	}
	return l
}

// trim forgets finished digests when there are too many. Called with q.mu held.
func (q *Queue) trim() {
	if len(q.items) < maxItems {
		return
	}
	for k, it := range q.items {
		if it.state == done {
			delete(q.items, k)
		}
		if len(q.items) < maxItems*9/10 {
			return
		}
	}
}

// Run starts warms as lanes have room and items are due, until ctx ends.
func (q *Queue) Run(ctx context.Context) error {
	q.init()
	log := logr.FromContextOrDiscard(ctx).WithName("warm")
	ctx = logr.NewContext(ctx, log)
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := q.dispatch(ctx, &wg)
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), 10*time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-q.wake:
		case <-timer.C:
		}
	}
}

// dispatch starts what may start now and returns when the next queued item falls due.
func (q *Queue) dispatch(ctx context.Context, wg *sync.WaitGroup) time.Time {
	pol := q.Policy.Current()
	if pol == nil {
		return time.Time{}
	}
	settings := map[string]policy.WarmSettings{}
	for _, m := range pol.Mirrors() {
		if _, ok := settings[m.Host]; !ok {
			settings[m.Host] = pol.Warm(m)
		}
	}
	now := time.Now()
	var next time.Time
	q.mu.Lock()
	defer q.mu.Unlock()
	for host, l := range q.lanes {
		s, ok := settings[host]
		if !ok || !s.Enabled {
			// The mirror left the policy or is no longer warmed: forget its queue.
			for _, it := range slices.Clone(l.pending) {
				q.unqueue(it)
				it.state = done
			}
			continue
		}
		for i := 0; i < len(l.pending) && l.running < s.Concurrency; {
			it := l.pending[i]
			if it.due.After(now) {
				if next.IsZero() || it.due.Before(next) {
					next = it.due
				}
				i++
				continue
			}
			q.unqueue(it)
			if allBound(it.pods) {
				it.state = done
				warmDuration.WithLabelValues(host, outcomeNodePulling).Observe(0)
				logr.FromContextOrDiscard(ctx).V(1).Info("not warmed: a node is pulling it", "image", it.image, "registry", host)
				continue
			}
			it.state = running
			l.running++
			warmActive.WithLabelValues(host).Inc()
			wg.Add(1)
			go func() {
				defer wg.Done()
				q.work(ctx, it, s)
			}()
		}
	}
	return next
}

func allBound(pods []Pod) bool {
	for _, p := range pods {
		if !p.Bound {
			return false
		}
	}
	return len(pods) > 0
}

// work warms one item and files the outcome.
func (q *Queue) work(ctx context.Context, it *item, s policy.WarmSettings) {
	log := logr.FromContextOrDiscard(ctx).WithValues("image", it.image, "registry", it.host)
	start := time.Now()
	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var last atomic.Int64
	last.Store(start.UnixNano())
	go watchdog(wctx, cancel, &last, s.StallTimeout)
	var reserved int64
	var deadline *time.Timer
	defer func() {
		if deadline != nil {
			deadline.Stop()
		}
	}()
	check := s.Mode == policy.WarmCheck
	req := contract.WarmRequest{
		Ref: it.ref, CheckOnly: check,
		Start: func(total int64, _ int) error {
			if !check {
				if err := q.reserve(it.host, total, s); err != nil {
					return err
				}
				reserved = total
			}
			deadline = time.AfterFunc(s.Deadline(total), func() { cancel(errDeadline) })
			return nil
		},
		Progress: func(int64) { last.Store(time.Now().UnixNano()) },
	}
	if q.Platforms != nil {
		req.Platforms = q.Platforms()
	}
	log.V(1).Info("warming", "platforms", fmt.Sprint(req.Platforms), "checkOnly", check)
	res, err := q.Warmer.Warm(wctx, req)
	took := time.Since(start)

	outcome, retry, after := outcomeWarmed, false, time.Duration(0)
	if check {
		outcome = outcomeChecked
	}
	var f *contract.WarmFailure
	var b *budgetError
	cause := context.Cause(wctx)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		// The controller is stopping (or lost the lead): the next leader starts over.
		q.finish(it, false, 0)
		warmActive.WithLabelValues(it.host).Dec()
		return
	case errors.Is(cause, errStalled):
		outcome, retry = outcomeStalled, true
		err = fmt.Errorf("no byte read for %s: %w", s.StallTimeout, err)
	case errors.Is(cause, errDeadline):
		outcome, retry = outcomeDeadline, true
		err = fmt.Errorf("not done within %s (%s at %s/s): %w", s.Deadline(reserved), s.Timeout, size(s.MinRate), err)
	case errors.As(err, &b):
		outcome, retry, after = outcomeOverBudget, b.wait > 0, b.wait
	case errors.As(err, &f):
		outcome, retry, after = f.Outcome, f.Retry, f.RetryAfter
	default:
		outcome = contract.WarmError
	}
	if err != nil && reserved > res.Bytes {
		q.refund(it.host, reserved-res.Bytes)
	}
	warmBytes.WithLabelValues(it.host).Add(float64(res.Bytes))
	warmBlobs.WithLabelValues(it.host).Add(float64(res.Blobs))
	warmDuration.WithLabelValues(it.host, outcome).Observe(took.Seconds())
	warmActive.WithLabelValues(it.host).Dec()

	switch {
	case err == nil && check:
		log.Info("mirror holds the image", "took", took.String(), "blobs", res.Blobs)
		q.event(it, corev1.EventTypeNormal, "MirrorChecked", "mirror holds every blob of %s (%d blobs, %s), checked in %s", it.image, res.Blobs, size(res.Bytes), round(took))
		q.finish(it, false, 0)
	case err == nil:
		log.Info("mirror warmed", "took", took.String(), "bytes", res.Bytes, "blobs", res.Blobs)
		q.event(it, corev1.EventTypeNormal, "MirrorWarmed", "mirror warmed %s in %s (%s, %d blobs)", it.image, round(took), size(res.Bytes), res.Blobs)
		q.finish(it, false, 0)
	default:
		wait, again := q.finish(it, retry, after)
		log.Info("mirror warm failed", "outcome", outcome, "retry", again, "in", wait.String(), "error", err.Error())
		msg := fmt.Sprintf("mirror not warmed with %s (%s): %s", it.image, outcome, err)
		if outcome == contract.WarmMissing {
			msg = fmt.Sprintf("mirror does not hold %s: %d of its blobs are missing (%s)", it.image, len(res.Missing), err)
		}
		if again {
			msg += fmt.Sprintf("; trying again in %s (attempt %d of %d)", round(wait), it.attempts+1, or(q.Attempts, DefaultAttempts))
		}
		q.event(it, corev1.EventTypeWarning, "MirrorWarmFailed", "%s", msg)
	}
}

// finish files an item's outcome: queued again after a backoff when retry allows and attempts
// remain, done otherwise. It returns the wait and whether it was queued again.
func (q *Queue) finish(it *item, retry bool, after time.Duration) (time.Duration, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	l := q.lane(it.host)
	l.running--
	defer q.poke()
	it.attempts++
	if !retry || it.attempts >= or(q.Attempts, DefaultAttempts) {
		it.state = done
		return 0, false
	}
	wait := min(or(q.Backoff, DefaultBackoff)<<(it.attempts-1), maxBackoff)
	wait = max(wait, after)
	it.state, it.due = queued, time.Now().Add(wait)
	l.pending = append(l.pending, it)
	warmQueued.WithLabelValues(it.host).Inc()
	return wait, true
}

// watchdog cancels ctx with errStalled when last (unix nanoseconds of the last read) is older
// than stall.
func watchdog(ctx context.Context, cancel context.CancelCauseFunc, last *atomic.Int64, stall time.Duration) {
	t := time.NewTicker(max(stall/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if now.Sub(time.Unix(0, last.Load())) > stall {
				cancel(errStalled)
				return
			}
		}
	}
}

// budgetError: the image does not fit the mirror's hourly byte budget now (wait > 0), or ever.
type budgetError struct {
	size, budget int64
	wait         time.Duration
}

func (b *budgetError) Error() string {
	if b.wait == 0 {
		return fmt.Sprintf("the image (%s) is larger than the mirror's warm budget of %s per hour", size(b.size), size(b.budget))
	}
	return fmt.Sprintf("the image (%s) does not fit what is left of the mirror's warm budget of %s this hour", size(b.size), size(b.budget))
}

// reserve takes n bytes from the host's budget for the current hour.
func (q *Queue) reserve(host string, n int64, s policy.WarmSettings) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	l := q.lane(host)
	now := time.Now()
	if now.Sub(l.window) >= time.Hour {
		l.window, l.spent = now, 0
	}
	if n > s.BudgetPerHour {
		return &budgetError{size: n, budget: s.BudgetPerHour}
	}
	if l.spent+n > s.BudgetPerHour {
		return &budgetError{size: n, budget: s.BudgetPerHour, wait: l.window.Add(time.Hour).Sub(now)}
	}
	l.spent += n
	return nil
}

func (q *Queue) refund(host string, n int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	l := q.lane(host)
	l.spent = max(0, l.spent-n)
}

// event records on the first pod that asked for the item.
func (q *Queue) event(it *item, typ, reason, format string, args ...any) {
	if q.Events == nil {
		return
	}
	q.mu.Lock()
	pods := slices.Clone(it.pods)
	q.mu.Unlock()
	if len(pods) == 0 {
		return
	}
	p := pods[0]
	note := fmt.Sprintf(format, args...)
	if len(note) > maxNote {
		note = note[:maxNote] + "..."
	}
	ref := &corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: p.Namespace, Name: p.Name, UID: p.UID}
	q.Events.Eventf(ref, nil, typ, reason, "Warm", "%s", note)
}

func or[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// size formats bytes as people read them: "1.0 GiB".
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func round(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}
