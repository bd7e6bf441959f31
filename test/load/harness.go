package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"
)

// mutatePath is where cmd/webhook serves the pod handler; the floor serves the same path.
const mutatePath = "/mutate-v1-pod"

// harness holds what every scenario shares: the mirror, the certificate, the policy.
type harness struct {
	o      options
	out    io.Writer
	mirror *mirror
	tls    *serving
	policy string
	seq    int // numbers log files
}

// server is a webhook under test (pullgate or the floor) with its own connection pool.
type server struct {
	proc   *child
	url    string
	client *http.Client
	pprof  string // base URL of the webhook's pprof server, when -cpuprofile asks for one
}

func newHarness(o options, out io.Writer) (*harness, error) {
	m, err := startMirror()
	if err != nil {
		return nil, err
	}
	h := &harness{o: o, out: out, mirror: m}
	if h.tls, err = newServing(filepath.Join(o.dir, "certs"), max(o.concurrency, o.burst)); err != nil {
		return nil, errors.Join(err, m.close())
	}
	// The policy a user would write for a Docker Hub mirror; resolve settings are defaults
	// (2s budget, 5m TTL, 10,000 cached digests).
	h.policy = filepath.Join(o.dir, "policy.yaml")
	doc := fmt.Sprintf(`apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors:
  - registry: docker.io
    mirror: %s/%s
    insecure: true
imagePullSecrets: [mirror-pull]
exclude:
  namespaces: [kube-system]
`, m.host, mirrorPrefix)
	if err := os.WriteFile(h.policy, []byte(doc), 0o600); err != nil {
		return nil, errors.Join(err, m.close())
	}
	return h, nil
}

func (h *harness) close() { _ = h.mirror.close() }

func (h *harness) logPath(name string) string {
	h.seq++
	return filepath.Join(h.o.dir, fmt.Sprintf("%02d-%s.log", h.seq, name))
}

// startWebhook starts bin/webhook serve and waits for /readyz. A port taken between choosing
// and binding it makes the child exit; that is retried.
func (h *harness) startWebhook(ctx context.Context, name string) (*server, error) {
	var errs []error
	for range 3 {
		ports, err := freePorts(4)
		if err != nil {
			return nil, err
		}
		health := "127.0.0.1:" + strconv.Itoa(ports[2])
		args := []string{"serve", "--policy", h.policy, "--cert-dir", h.tls.dir,
			"--bind-address", "127.0.0.1", "--port", strconv.Itoa(ports[0]),
			"--metrics-bind-address", "127.0.0.1:" + strconv.Itoa(ports[1]),
			"--health-probe-bind-address", health}
		pprof := ""
		if h.o.cpuprofile != "" {
			pprof = "http://127.0.0.1:" + strconv.Itoa(ports[3])
			args = append(args, "--pprof-bind-address", "127.0.0.1:"+strconv.Itoa(ports[3]))
		}
		proc, err := startChild("webhook", h.logPath("webhook-"+name), h.o.webhook, args...)
		if err != nil {
			return nil, err
		}
		plain := &http.Client{Timeout: time.Second}
		err = proc.waitReady(ctx, func(ctx context.Context) error { return get(ctx, plain, "http://"+health+"/readyz") })
		if err == nil {
			return &server{proc: proc, url: "https://127.0.0.1:" + strconv.Itoa(ports[0]) + mutatePath, client: h.tls.newClient(), pprof: pprof}, nil
		}
		proc.stop()
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// startFloor starts this binary again as the floor webhook, decoding reviews with decoder.
func (h *harness) startFloor(ctx context.Context, decoder string) (*server, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var errs []error
	for range 3 {
		ports, err := freePorts(1)
		if err != nil {
			return nil, err
		}
		base := "https://127.0.0.1:" + strconv.Itoa(ports[0])
		proc, err := startChild("floor", h.logPath("floor"), exe, floorCommand, "-cert-dir", h.tls.dir, "-addr", "127.0.0.1:"+strconv.Itoa(ports[0]), "-decoder", decoder)
		if err != nil {
			return nil, err
		}
		client := h.tls.newClient()
		err = proc.waitReady(ctx, func(ctx context.Context) error { return get(ctx, client, base+"/readyz") })
		if err == nil {
			return &server{proc: proc, url: base + mutatePath, client: client}, nil
		}
		proc.stop()
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// profile writes the CPU profile the webhook's pprof server records over d.
func profile(ctx context.Context, base string, d time.Duration, path string) error {
	secs := int((d + time.Second - 1) / time.Second)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", base, secs), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("cpu profile: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cpu profile: %s", resp.Status)
	}
	f, err := os.Create(path) //nolint:gosec // G304: the path the user asked for
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	return errors.Join(err, f.Close())
}

func get(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// row is one line of the report.
type row struct {
	name     string
	st       stats
	registry string        // registry requests the scenario caused, in words
	peak     int64         // webhook VmHWM at the end, bytes
	rss      int64         // webhook VmRSS at the end, bytes
	cpu      time.Duration // webhook CPU time during the measured requests
	genCPU   time.Duration // the load test's own CPU time meanwhile (vegeta, registry, checks)
	broken   string        // a timing-independent invariant that failed
}

// finish reads the server's memory and stops it.
func (s *server) finish(r *row) error {
	rss, peak, err := s.proc.memory()
	s.proc.stop()
	r.rss, r.peak = rss, peak
	return err
}

func (h *harness) run(ctx context.Context) error {
	header(h.o, h.out)
	review1, err := newReview(1)
	if err != nil {
		return err
	}
	reviewN, err := newReview(h.o.slowImages)
	if err != nil {
		return err
	}
	warm := tags("t", h.o.warmTags)
	if err := h.mirror.push("warm", warm); err != nil {
		return err
	}
	warmBody := func(seq uint64) []byte { return review1.body(seq, "warm:"+warm[seq%uint64(len(warm))]) }

	one := func(f func(context.Context) (row, error)) func(context.Context) ([]row, error) {
		return func(ctx context.Context) ([]row, error) {
			r, err := f(ctx)
			return []row{r}, err
		}
	}
	scenarios := []struct {
		name string
		run  func(context.Context) ([]row, error)
	}{
		{"warm", func(ctx context.Context) ([]row, error) { return h.warm(ctx, warmBody) }},
		{"cold", one(func(ctx context.Context) (row, error) { return h.cold(ctx, review1, warmBody) })},
		{"burst", one(func(ctx context.Context) (row, error) { return h.burst(ctx, review1) })},
		{"slow", one(func(ctx context.Context) (row, error) { return h.slow(ctx, reviewN, warmBody) })},
		{"memory", one(func(ctx context.Context) (row, error) { return h.memory(ctx, review1) })},
	}
	rows := map[string]row{}
	var order []string
	for _, sc := range scenarios {
		if len(h.o.only) > 0 && !slices.Contains(h.o.only, sc.name) {
			continue
		}
		began := time.Now()
		rs, err := sc.run(ctx)
		if err != nil {
			return fmt.Errorf("scenario %s: %w", sc.name, err)
		}
		_, _ = fmt.Fprintf(os.Stderr, "load: %s done in %s\n", sc.name, time.Since(began).Round(time.Millisecond))
		for i, r := range rs {
			key := sc.name
			if sc.name == "warm" && i < len(rs)-1 {
				key = []string{"floor", "floor-kjson"}[i] // the warm scenario's floors come first
			}
			rows[key] = r
			order = append(order, key)
		}
	}
	return h.report(rows, order)
}

// prime sends n warm requests that are not measured: they open the client's connections and
// fill the webhook's cache and its connections to the registry.
func (h *harness) prime(ctx context.Context, s *server, conc, n int, body func(uint64) []byte, check func([]byte) error) error {
	st := attack{url: s.url, client: s.client, concurrency: conc, max: n, body: body, check: check}.run(ctx)
	if st.failed > 0 {
		return fmt.Errorf("priming: %d of %d requests failed:%s", st.failed, st.requests, st.failures())
	}
	return nil
}

// measure runs the scenario's load and records the webhook's CPU time during it.
func (h *harness) measure(ctx context.Context, s *server, r *row, body func(uint64) []byte, check func([]byte) error, maxRequests int) {
	a := attack{
		url: s.url, client: s.client, concurrency: h.o.concurrency, rate: h.o.rate,
		duration: h.o.duration, max: maxRequests, body: body, check: check,
	}
	r.st, r.cpu, r.genCPU = s.run(ctx, a)
}

// run runs an attack on s and returns what it measured, the CPU time s used meanwhile and the
// CPU time this process used (the load generator, and the mirror registry when it is asked).
func (s *server) run(ctx context.Context, a attack) (stats, time.Duration, time.Duration) {
	before, err := s.proc.cpu()
	st := a.run(ctx)
	after, err2 := s.proc.cpu()
	if err != nil || err2 != nil {
		return st, 0, st.self
	}
	return st, after - before, st.self
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

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
	if err := h.mirror.push("cold", cold); err != nil {
		return row{}, err
	}
	s, err := h.startWebhook(ctx, "cold")
	if err != nil {
		return row{}, err
	}
	if err := h.prime(ctx, s, h.o.concurrency, max(2*h.o.concurrency, h.o.warmTags), warmBody, pinned(1)); err != nil {
		s.proc.stop()
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
	if err := h.mirror.push("slow", slow); err != nil {
		return row{}, err
	}
	s, err := h.startWebhook(ctx, "slow")
	if err != nil {
		return row{}, err
	}
	if err := h.prime(ctx, s, h.o.concurrency, max(2*h.o.concurrency, h.o.warmTags), warmBody, pinned(1)); err != nil {
		s.proc.stop()
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

func (h *harness) report(rows map[string]row, order []string) error {
	w := tabwriter.NewWriter(h.out, 0, 0, 2, ' ', tabwriter.AlignRight)
	_, _ = fmt.Fprintln(w, "scenario\trequests\treq/s\tp50\tp90\tp99\terrors\twebhook CPU/req\tloadgen CPU/req\tregistry\tpeak RSS\t")
	var problems []string
	for _, name := range order {
		r := rows[name]
		_, _ = fmt.Fprintf(w, "%s\t%d\t%.0f\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t\n", r.name, r.st.requests, r.st.throughput(),
			ms(r.st.quantile(.5)), ms(r.st.quantile(.9)), ms(r.st.quantile(.99)), r.st.failed,
			perRequest(r.cpu, r.st.requests), perRequest(r.genCPU, r.st.requests), r.registry, mib(r.peak))
		if r.st.failed > 0 {
			problems = append(problems, fmt.Sprintf("%s: %d failed requests:%s", r.name, r.st.failed, r.st.failures()))
		}
		if r.broken != "" {
			problems = append(problems, r.name+": "+r.broken)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	_, _ = fmt.Fprintln(h.out, "\nreq/s: answers per second of the measured run; p50/p90/p99: exact latency percentiles, client side;")
	_, _ = fmt.Fprintln(h.out, "errors: failed requests and wrong answers (not allowed, a warning, an image left unpinned);")
	_, _ = fmt.Fprintln(h.out, "webhook CPU/req: the webhook process's user+system time over the run / requests;")
	_, _ = fmt.Fprintln(h.out, "loadgen CPU/req: the same for this process (vegeta, its TLS client, the in-process mirror);")
	_, _ = fmt.Fprintln(h.out, "peak RSS: the webhook's VmHWM when its scenario ended (a fresh process per scenario).")
	if memory, ok := rows["memory"]; ok {
		_, _ = fmt.Fprintf(h.out, "memory after the %d-tag run: VmRSS %s, VmHWM %s\n", h.o.cached, mib(memory.rss), mib(memory.peak))
	}
	_, _ = fmt.Fprintf(h.out, "load average now: %s\n\n", loadAverage())
	t := tabwriter.NewWriter(h.out, 0, 0, 2, ' ', 0)
	_, _ = fmt.Fprintln(t, "target\tmeasured\twanted\t")
	target := func(name, got, want string, ok bool) {
		verdict := "met"
		if !ok {
			verdict = "NOT MET"
		}
		_, _ = fmt.Fprintf(t, "%s\t%s\t%s\t%s\n", name, got, want, verdict)
	}
	floor, hasFloor := rows["floor"]
	if warm, ok := rows["warm"]; ok && hasFloor {
		thr := warm.st.throughput() / floor.st.throughput()
		p99 := float64(warm.st.quantile(.99)) / float64(floor.st.quantile(.99))
		target("(a) warm req/s vs floor", fmt.Sprintf("%.2fx (%.0f vs %.0f)", thr, warm.st.throughput(), floor.st.throughput()), ">= 0.80x", thr >= 0.8)
		target("(a) warm p99 vs floor", fmt.Sprintf("%.2fx (%s vs %s)", p99, ms(warm.st.quantile(.99)), ms(floor.st.quantile(.99))), "<= 2x", p99 <= 2)
		per := func(r row) float64 { return float64(r.cpu) / float64(max(1, r.st.requests)) }
		if warm.cpu > 0 && floor.cpu > 0 {
			_, _ = fmt.Fprintf(t, "(a) warm webhook CPU/req vs floor\t%.2fx (%s vs %s)\t(for information)\t\n", per(warm)/per(floor),
				perRequest(warm.cpu, warm.st.requests), perRequest(floor.cpu, floor.st.requests))
		}
		// The floor decodes with encoding/json, as a trivial webhook would; pullgate's decoder is
		// faster, so this one says what pullgate costs beyond decoding the same way.
		if fk, ok := rows["floor-kjson"]; ok && fk.cpu > 0 && warm.cpu > 0 {
			_, _ = fmt.Fprintf(t, "(a) warm req/s vs floor with kjson\t%.2fx (%.0f vs %.0f)\t(for information)\t\n", warm.st.throughput()/fk.st.throughput(), warm.st.throughput(), fk.st.throughput())
			_, _ = fmt.Fprintf(t, "(a) warm webhook CPU/req vs floor with kjson\t%.2fx (%s vs %s)\t(for information)\t\n", per(warm)/per(fk),
				perRequest(warm.cpu, warm.st.requests), perRequest(fk.cpu, fk.st.requests))
		}
	}
	if burst, ok := rows["burst"]; ok {
		target("(c) registry requests per burst", burst.registry, "1", burst.broken == "")
	}
	if slow, ok := rows["slow"]; ok {
		target(fmt.Sprintf("(d) p50, %d new images, registry +%s", h.o.slowImages, h.o.delay), ms(slow.st.quantile(.5)), "< 100ms", slow.st.quantile(.5) < 100*time.Millisecond)
	}
	if memory, ok := rows["memory"]; ok {
		target(fmt.Sprintf("RSS with %d cached digests", h.o.cached), "VmHWM "+mib(memory.peak), "< 64 MiB", memory.peak < 64<<20)
	}
	if err := t.Flush(); err != nil {
		return err
	}
	if len(problems) > 0 {
		_, _ = fmt.Fprintln(h.out)
		for _, p := range problems {
			_, _ = fmt.Fprintln(h.out, "FAILED "+p)
		}
		return fmt.Errorf("%d scenario(s) failed", len(problems))
	}
	return nil
}

// perRequest is the webhook's CPU time per request, in microseconds.
func perRequest(cpu time.Duration, n int) string {
	if cpu <= 0 || n == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0fµs", float64(cpu)/float64(time.Microsecond)/float64(n))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

func mib(b int64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}
