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
	seq    int      // numbers log files
	notes  []string // printed under the table
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
