package warm

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/name"
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
