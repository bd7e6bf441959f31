package main

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// (a) warm: a few tags over and over, every digest from the cache; and the floor under the
// same load. The two run in alternating slices (floor, pullgate, pullgate, floor, ...) so that
// whatever else the machine does at the time weighs on both alike.
func (h *harness) warm(ctx context.Context, body func(uint64) []byte) ([]row, error) {
	type side struct {
		s     *server
		r     *row
		check func([]byte) error
	}
	var sides []side
	stop := func() {
		for _, x := range sides {
			x.s.proc.stop()
		}
	}
	floor := row{name: "floor: trivial webhook, same load as (a)", registry: "-", st: stats{samples: map[string]int{}}}
	floorK := row{name: "floor with pullgate's JSON decoder (kjson)", registry: "-", st: stats{samples: map[string]int{}}}
	warm := row{name: fmt.Sprintf("(a) warm: %d tags repeated", h.o.warmTags), st: stats{samples: map[string]int{}}}
	for _, f := range []struct {
		decoder string
		r       *row
	}{{"encoding/json", &floor}, {"kjson", &floorK}} {
		s, err := h.startFloor(ctx, f.decoder)
		if err != nil {
			stop()
			return nil, err
		}
		sides = append(sides, side{s, f.r, allowed})
	}
	pg, err := h.startWebhook(ctx, "warm")
	if err != nil {
		stop()
		return nil, err
	}
	sides = append(sides, side{pg, &warm, pinned(1)})
	for _, x := range sides {
		if err := h.prime(ctx, x.s, h.o.concurrency, max(2*h.o.concurrency, h.o.warmTags), body, x.check); err != nil {
			stop()
			return nil, err
		}
	}
	var warming *warmer
	if h.o.warming {
		w, err := h.startWarmer(ctx)
		if err != nil {
			stop()
			return nil, fmt.Errorf("warmer: %w", err)
		}
		warming = w
		for _, r := range []*row{&floor, &floorK, &warm} {
			r.name += ", warming on"
		}
	}
	before := h.mirror.manifests.Load()
	// The profile spans the floors' slices too; pullgate is idle then, so what it shows is
	// pullgate's share of the warm load.
	profiled := make(chan error, 1)
	if pg.pprof != "" {
		go func() {
			profiled <- profile(ctx, pg.pprof, time.Duration(len(sides))*h.o.duration, h.o.cpuprofile)
		}()
	} else {
		profiled <- nil
	}
	slice := h.o.duration / time.Duration(h.o.rounds)
	for i := range h.o.rounds {
		for j := range sides {
			x := sides[(i+j)%len(sides)]
			st, cpu, gen := x.s.run(ctx, attack{
				url: x.s.url, client: x.s.client, concurrency: h.o.concurrency, rate: h.o.rate,
				duration: slice, body: body, check: x.check,
			})
			x.r.st.merge(st)
			x.r.cpu += cpu
			x.r.genCPU += gen
		}
	}
	warm.registry = fmt.Sprintf("%d manifest requests", h.mirror.manifests.Load()-before)
	errs := []error{<-profiled}
	if warming != nil {
		note, err := warming.stop(ctx, h.o)
		h.notes = append(h.notes, note)
		errs = append(errs, err)
	}
	for _, x := range sides {
		errs = append(errs, x.s.finish(x.r))
	}
	return []row{floor, floorK, warm}, errors.Join(errs...)
}

// coldBudget is how many requests a cold scenario may make: tags are pushed before it starts,
// and it stops when they are used up even if -duration has not passed.
func (h *harness) coldBudget(perSecond float64) int {
	if h.o.coldTags > 0 {
		return h.o.coldTags
	}
	if h.o.rate > 0 {
		perSecond = float64(h.o.rate)
	}
	return max(1000, int(perSecond*h.o.duration.Seconds()))
}

// (b) cold: every request names a tag never seen before; each costs a registry round trip.
func (h *harness) cold(ctx context.Context, rv *review, warmBody func(uint64) []byte) (row, error) {
	n := h.coldBudget(4000)
	cold := tags("t", n)
	s, err := h.startPrimed(ctx, "cold", cold, warmBody)
	if err != nil {
		return row{}, err
	}
	r := row{name: "(b) cold: a new tag every request"}
	before := h.mirror.manifests.Load()
	h.measure(ctx, s, &r, func(seq uint64) []byte { return rv.body(seq, "cold:"+cold[seq]) }, pinned(1), n)
	r.registry = fmt.Sprintf("%.2f manifest requests/request", float64(h.mirror.manifests.Load()-before)/float64(max(1, r.st.requests)))
	if r.st.requests >= n && r.st.elapsed < h.o.duration {
		r.name += fmt.Sprintf(" (all %d tags used in %s)", n, r.st.elapsed.Round(time.Millisecond))
	}
	return r, s.finish(&r)
}

// (c) burst: many pods at once naming the same new tag, like a Deployment scaling up. The
// connections are opened first, as the API server keeps them open to its webhooks.
func (h *harness) burst(ctx context.Context, rv *review) (row, error) {
	rounds := tags("r", h.o.burstRounds)
	if err := h.mirror.push("burst", append(rounds, "warm")); err != nil {
		return row{}, err
	}
	s, err := h.startWebhook(ctx, "burst")
	if err != nil {
		return row{}, err
	}
	warmBody := func(seq uint64) []byte { return rv.body(seq, "burst:warm") }
	if err := h.prime(ctx, s, h.o.burst, h.o.burst, warmBody, pinned(1)); err != nil {
		s.proc.stop()
		return row{}, err
	}
	r := row{name: fmt.Sprintf("(c) burst: %d at once, one new tag (x%d)", h.o.burst, h.o.burstRounds), st: stats{samples: map[string]int{}}}
	worst := int64(0)
	for _, tag := range rounds {
		before := h.mirror.manifests.Load()
		st, cpu, gen := s.run(ctx, attack{
			url: s.url, client: s.client, concurrency: h.o.burst, max: h.o.burst,
			body: func(seq uint64) []byte { return rv.body(seq, "burst:"+tag) }, check: pinned(1),
		})
		r.st.merge(st)
		r.cpu += cpu
		r.genCPU += gen
		worst = max(worst, h.mirror.manifests.Load()-before)
	}
	r.registry = fmt.Sprintf("%d manifest request(s) per burst", worst)
	if worst != 1 {
		r.broken = fmt.Sprintf("a burst for one tag caused %d manifest requests, want 1", worst)
	}
	return r, s.finish(&r)
}

// (d) a pod with several new images against a registry that takes -delay per manifest request:
// resolved concurrently, the pod waits about one delay, not one per image.
func (h *harness) slow(ctx context.Context, rv *review, warmBody func(uint64) []byte) (row, error) {
	// Closed loop: about concurrency/delay pods per second.
	n := h.coldBudget(1.25 * float64(h.o.concurrency) / h.o.delay.Seconds())
	k := h.o.slowImages
	slow := tags("t", n*k)
	s, err := h.startPrimed(ctx, "slow", slow, warmBody)
	if err != nil {
		return row{}, err
	}
	h.mirror.delay.Store(int64(h.o.delay))
	h.mirror.delayAll.Store(h.o.delayAll)
	defer h.mirror.delay.Store(0)
	what := "manifest request"
	if h.o.delayAll {
		what = "request"
	}
	r := row{name: fmt.Sprintf("(d) cold pod, %d new images, registry +%s/%s", k, h.o.delay, what)}
	before := h.mirror.manifests.Load()
	h.measure(ctx, s, &r, func(seq uint64) []byte {
		images := make([]string, 0, k)
		for j := range k {
			images = append(images, "slow:"+slow[int(seq)*k+j]) //nolint:gosec // G115: seq < n, the pacer's cap
		}
		return rv.body(seq, images...)
	}, pinned(k), n)
	r.registry = fmt.Sprintf("%.2f manifest requests/pod", float64(h.mirror.manifests.Load()-before)/float64(max(1, r.st.requests)))
	return r, s.finish(&r)
}

// memory: drive -cached distinct tags through a fresh webhook, check the last of them are
// answered from the cache, then read its resident memory.
func (h *harness) memory(ctx context.Context, rv *review) (row, error) {
	mem := tags("t", h.o.cached)
	if err := h.mirror.push("mem", mem); err != nil {
		return row{}, err
	}
	s, err := h.startWebhook(ctx, "memory")
	if err != nil {
		return row{}, err
	}
	r := row{name: fmt.Sprintf("memory: %d tags driven, then cached", h.o.cached)}
	r.st, r.cpu, r.genCPU = s.run(ctx, attack{
		url: s.url, client: s.client, concurrency: h.o.concurrency, max: h.o.cached,
		body: func(seq uint64) []byte { return rv.body(seq, "mem:"+mem[seq]) }, check: pinned(1),
	})
	replay := min(100, h.o.cached)
	before := h.mirror.manifests.Load()
	st := attack{
		url: s.url, client: s.client, concurrency: h.o.concurrency, max: replay,
		body: func(seq uint64) []byte {
			return rv.body(seq, "mem:"+mem[h.o.cached-replay+int(seq)]) //nolint:gosec // G115: seq < replay, the pacer's cap
		},
		check: pinned(1),
	}.run(ctx)
	asked := h.mirror.manifests.Load() - before
	r.st.failed += st.failed
	for k, v := range st.samples {
		r.st.samples[k] += v
	}
	r.registry = fmt.Sprintf("%d manifest requests replaying %d", asked, replay)
	if asked != 0 {
		r.broken = fmt.Sprintf("replaying %d cached tags caused %d manifest requests, want 0", replay, asked)
	}
	return r, s.finish(&r)
}

// startPrimed pushes tags to the mirror under name, starts a webhook and primes it with the warm
// scenario's requests, so that what is measured next starts from a connected, warm process.
func (h *harness) startPrimed(ctx context.Context, name string, tags []string, warmBody func(uint64) []byte) (*server, error) {
	if err := h.mirror.push(name, tags); err != nil {
		return nil, err
	}
	s, err := h.startWebhook(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := h.prime(ctx, s, h.o.concurrency, max(2*h.o.concurrency, h.o.warmTags), warmBody, pinned(1)); err != nil {
		s.proc.stop()
		return nil, err
	}
	return s, nil
}
