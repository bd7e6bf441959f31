package warm_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"

	"github.com/pullgate/pullgate/pkg/contract"
	"github.com/pullgate/pullgate/pkg/policy"
	"github.com/pullgate/pullgate/pkg/resolve"
	"github.com/pullgate/pullgate/pkg/warm"
)

type fixedPolicy struct{ c *policy.Compiled }

func (f fixedPolicy) Current() *policy.Compiled { return f.c }

func compile(t *testing.T, host, warmYAML string) fixedPolicy {
	t.Helper()
	doc := fmt.Sprintf("apiVersion: pullgate.dev/v1alpha1\nkind: Policy\nmirrors: [{registry: docker.io, mirror: %s, insecure: true}]\nwarm: %s\n", host, warmYAML)
	c, err := policy.Check([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return fixedPolicy{c}
}

// mirror is an in-memory registry that counts blob GETs.
type mirror struct {
	host string
	mu   sync.Mutex
	gets map[string]int
}

func newMirror(t *testing.T) *mirror {
	t.Helper()
	m := &mirror{gets: map[string]int{}}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") && r.UserAgent() != "push" {
			m.mu.Lock()
			m.gets[r.URL.Path]++
			m.mu.Unlock()
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	m.host = strings.TrimPrefix(srv.URL, "http://")
	return m
}

func (m *mirror) push(t *testing.T, repoTag string) string {
	t.Helper()
	img, err := random.Image(64<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(m.host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithUserAgent("push")); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return ref.Context().Name() + ":" + ref.Identifier() + "@" + d.String()
}

func run(t *testing.T, q *warm.Queue) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = q.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// settled waits until the queue has nothing left to do: every digest warmed, given up on or
// let go. Only then does a count of tries say there will be no more.
func settled(t *testing.T, q *warm.Queue) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); warm.Pending(q) > 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d digests still pending after 10s", warm.Pending(q))
		}
	}
}

func waitEvent(t *testing.T, rec *events.FakeRecorder, within time.Duration) string {
	t.Helper()
	select {
	case e := <-rec.Events:
		return e
	case <-time.After(within):
		t.Fatal("no Event")
		return ""
	}
}

func pod(n int) warm.Pod {
	return warm.Pod{Namespace: "ns", Name: fmt.Sprintf("p%d", n), UID: types.UID(fmt.Sprint("uid-", n))}
}

// Five pods asking for one new digest: one warm, each blob read once, one Event on the first
// pod, metrics by mirror host.
func TestQueueWarmsOncePerDigest(t *testing.T) {
	t.Parallel()
	m := newMirror(t)
	image := m.push(t, "library/app:v1")
	pol := compile(t, m.host, "{enabled: true}")
	res, err := resolve.New(resolve.Options{Registries: map[string]resolve.Registry{m.host: {Insecure: true}}})
	if err != nil {
		t.Fatal(err)
	}
	rec := events.NewFakeRecorder(10)
	q := &warm.Queue{Warmer: res, Policy: pol, Events: rec, Settle: 10 * time.Millisecond}
	before := counter(t, warmBytes(m.host))
	for i := range 5 {
		q.Add(image, pod(i))
	}
	run(t, q)
	e := waitEvent(t, rec, 10*time.Second)
	if !strings.HasPrefix(e, "Normal MirrorWarmed mirror warmed "+image+" in ") || !strings.Contains(e, "KiB, 4 blobs)") {
		t.Errorf("Event %q", e)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.gets) != 4 {
		t.Errorf("%d blobs read, want 4 (config and 3 layers): %v", len(m.gets), m.gets)
	}
	for p, n := range m.gets {
		if n != 1 {
			t.Errorf("%s read %d times", p, n)
		}
	}
	if got := counter(t, warmBytes(m.host)) - before; got < 3*64<<10 {
		t.Errorf("pullgate_warm_bytes_total grew by %v", got)
	}
	q.Add(image, pod(9))
	select {
	case e := <-rec.Events:
		t.Errorf("a warm digest was warmed again: %s", e)
	case <-time.After(200 * time.Millisecond):
	}
}

// fake is a Warmer for faults: it answers with fail, counting calls.
type fake struct {
	calls atomic.Int32
	fail  func(ctx context.Context, req contract.WarmRequest) (contract.WarmResult, error)
}

func (f *fake) Warm(ctx context.Context, req contract.WarmRequest) (contract.WarmResult, error) {
	f.calls.Add(1)
	return f.fail(ctx, req)
}

// Each fault ends in its outcome, an Event saying why, and a bounded number of tries: no retry
// storm.
func TestQueueFaults(t *testing.T) {
	t.Parallel()
	failure := func(outcome string, retry bool) func(context.Context, contract.WarmRequest) (contract.WarmResult, error) {
		return func(context.Context, contract.WarmRequest) (contract.WarmResult, error) {
			return contract.WarmResult{}, &contract.WarmFailure{Outcome: outcome, Retry: retry, Err: errors.New("the registry said so")}
		}
	}
	hang := func(ctx context.Context, req contract.WarmRequest) (contract.WarmResult, error) {
		if err := req.Start(1000, 1); err != nil {
			return contract.WarmResult{}, err
		}
		req.Progress(10)
		<-ctx.Done()
		return contract.WarmResult{Bytes: 10}, &contract.WarmFailure{Outcome: contract.WarmCanceled, Err: ctx.Err()}
	}
	big := func(_ context.Context, req contract.WarmRequest) (contract.WarmResult, error) {
		return contract.WarmResult{}, req.Start(2<<30, 3)
	}
	tests := []struct {
		name, warm string
		fail       func(context.Context, contract.WarmRequest) (contract.WarmResult, error)
		calls      int32
		outcome    string
		says       string
	}{
		{"429", "{enabled: true}", failure(contract.WarmRateLimited, true), 3, contract.WarmRateLimited, "(rate_limited)"},
		{"upstream gone", "{enabled: true}", failure(contract.WarmServerError, true), 3, contract.WarmServerError, "(server_error)"},
		{"digest mismatch", "{enabled: true}", failure(contract.WarmDigestMismatch, false), 1, contract.WarmDigestMismatch, "(digest_mismatch)"},
		{"hang mid-blob", "{enabled: true, stallTimeout: 100ms}", hang, 3, "stalled", "no byte read for 100ms"},
		{"over budget", "{enabled: true, budgetPerHour: 1Gi}", big, 1, "over_budget", "larger than the mirror's warm budget of 1.0 GiB per hour"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			host := fmt.Sprintf("mirror-%d.example.com", i)
			f := &fake{fail: tt.fail}
			before := observations(t, warm.DurationOf(host, tt.outcome))
			rec := events.NewFakeRecorder(10)
			q := &warm.Queue{Warmer: f, Policy: compile(t, host, tt.warm), Events: rec, Settle: time.Millisecond, Attempts: 3, Backoff: 20 * time.Millisecond}
			q.Add(host+"/library/app:v1@sha256:"+strings.Repeat("a", 64), pod(1))
			run(t, q)
			var last string
			for range tt.calls {
				last = waitEvent(t, rec, 5*time.Second)
				if !strings.HasPrefix(last, "Warning MirrorWarmFailed ") || !strings.Contains(last, tt.says) {
					t.Errorf("Event %q, want it to say %q", last, tt.says)
				}
			}
			if strings.Contains(last, "trying again") {
				t.Errorf("the last Event promises another try: %q", last)
			}
			settled(t, q)
			if n := f.calls.Load(); n != tt.calls {
				t.Errorf("%d tries, want %d", n, tt.calls)
			}
			if n := observations(t, warm.DurationOf(host, tt.outcome)) - before; n != uint64(tt.calls) {
				t.Errorf("pullgate_warm_duration_seconds{mirror=%q,outcome=%q} counted %d, want %d", host, tt.outcome, n, tt.calls)
			}
		})
	}
}

// A digest a running pod already has is warm; a pod a node took at once is left to that node.
func TestQueueSkips(t *testing.T) {
	t.Parallel()
	host := "skip.example.com"
	f := &fake{fail: func(context.Context, contract.WarmRequest) (contract.WarmResult, error) {
		return contract.WarmResult{}, nil
	}}
	q := &warm.Queue{Warmer: f, Policy: compile(t, host, "{enabled: true}"), Settle: 50 * time.Millisecond}
	running := host + "/library/a@sha256:" + strings.Repeat("a", 64)
	bound := host + "/library/b@sha256:" + strings.Repeat("b", 64)
	other := "elsewhere.example.com/library/c@sha256:" + strings.Repeat("c", 64)
	tagged := host + "/library/d:v1" // not pinned
	q.Add(running, pod(1))
	q.MarkWarm(running)
	q.Add(bound, warm.Pod{Namespace: "ns", Name: "b", UID: "b", Bound: true})
	q.Add(other, pod(2))
	q.Add(tagged, pod(3))
	run(t, q)
	settled(t, q) // the bound pod's digest is let go, the running one's was never warmed
	if n := f.calls.Load(); n != 0 {
		t.Errorf("%d warms, want none", n)
	}
}

// Warming off (the default, or for one mirror) queues nothing.
func TestQueueDisabled(t *testing.T) {
	t.Parallel()
	host := "off.example.com"
	f := &fake{fail: func(context.Context, contract.WarmRequest) (contract.WarmResult, error) {
		return contract.WarmResult{}, nil
	}}
	q := &warm.Queue{Warmer: f, Policy: compile(t, host, "{}"), Settle: time.Millisecond}
	q.Add(host+"/library/a@sha256:"+strings.Repeat("a", 64), pod(1))
	if n := warm.Pending(q); n != 0 {
		t.Fatalf("%d digests queued with warming off", n)
	}
	run(t, q)
	settled(t, q)
	if n := f.calls.Load(); n != 0 {
		t.Errorf("%d warms with warming off", n)
	}
}

func warmBytes(host string) prometheus.Counter { return warm.WarmBytesOf(host) }

func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// observations is a histogram's sample count.
func observations(t *testing.T, h prometheus.Metric) uint64 {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// Every try files an Event of its own through a real events broadcaster: the API's Event series
// keep the first note of Events alike in type, reason and action, and a user must read the last
// try's outcome, not only the first's "trying again".
func TestQueueEventPerTry(t *testing.T) {
	t.Parallel()
	host := "mirror-series.example.com"
	client := kubefake.NewClientset()
	b := events.NewBroadcaster(&events.EventSinkImpl{Interface: client.EventsV1()})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := b.StartRecordingToSinkWithContext(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Shutdown)
	f := &fake{fail: func(context.Context, contract.WarmRequest) (contract.WarmResult, error) {
		return contract.WarmResult{}, &contract.WarmFailure{Outcome: contract.WarmRateLimited, Retry: true, Err: errors.New("429")}
	}}
	q := &warm.Queue{Warmer: f, Policy: compile(t, host, "{enabled: true}"), Events: b.NewRecorder(scheme.Scheme, "pullgate-warm"),
		Settle: time.Millisecond, Attempts: 3, Backoff: 20 * time.Millisecond}
	q.Add(host+"/library/app:v1@sha256:"+strings.Repeat("b", 64), pod(1))
	run(t, q)
	var notes []string
	deadline := time.Now().Add(10 * time.Second)
	for len(notes) < 3 && time.Now().Before(deadline) {
		list, err := client.EventsV1().Events("ns").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(list.Items, func(a, b eventsv1.Event) int { return a.EventTime.Compare(b.EventTime.Time) })
		notes = notes[:0]
		for _, e := range list.Items {
			notes = append(notes, e.Note)
		}
		time.Sleep(20 * time.Millisecond) // polling the fake API; the broadcaster writes asynchronously
	}
	if len(notes) != 3 {
		t.Fatalf("%d Events in the API after 3 tries, want 3: %q", len(notes), notes)
	}
	for i, want := range []string{"(attempt 2 of 3)", "(attempt 3 of 3)"} {
		if !strings.Contains(notes[i], want) {
			t.Errorf("Event %q, want it to say %q", notes[i], want)
		}
	}
	if strings.Contains(notes[2], "trying again") || !strings.Contains(notes[2], "(rate_limited)") {
		t.Errorf("the last try's Event %q, want the outcome and no further try", notes[2])
	}
}
