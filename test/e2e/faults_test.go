//go:build e2e

package e2e_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"golang.org/x/sync/errgroup"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pullgate/pullgate/test/e2e"
)

// Names of pullgate's metrics the fault tests read.
const (
	resolveCount  = "pullgate_resolve_duration_seconds_count"
	requestsTotal = "pullgate_registry_requests_total"
	unpinnedTotal = "pullgate_unpinned_images_total"
	cacheTotal    = "pullgate_resolve_cache_total"
	mutations     = "pullgate_mutations_total"
	circuitOpen   = "pullgate_registry_circuit_open"
)

// readyDigest is a syntactically valid digest for readiness probes: an image that already carries
// a digest is rewritten to the mirror without asking any registry, so a probe neither depends on
// the broken mirror nor counts against its circuit breaker.
const readyDigest = "sha256:0000000000000000000000000000000000000000000000000000000000000000"

// registryFault is one way a mirror breaks, and what pullgate is expected to make of it.
type registryFault struct {
	name string
	// mirror starts the broken mirror for t and returns its host:port, and whether the policy
	// should say insecure (plain HTTP).
	mirror   func(t *testing.T) (addr string, insecure bool)
	fallback bool // the policy's resolve.fallbackToUpstream
	verify   bool // the policy's resolve.verifyDigest

	outcome string // outcome label of pullgate_resolve_duration_seconds that must move
	code    string // code label of pullgate_registry_requests_total that must move
	reason  string // in the warning (Keep) and in the denial (Deny)
	// pins: the pod ends up pinned all the same, with no warning, under either onError.
	pins bool
	// why is the reason the row expects what it expects, for the reader of a failure.
	why string
}

// Issue 7: for every way a mirror breaks, a pod is admitted with onError Keep (unpinned, with a
// warning naming the cause) and denied with onError Deny, well inside the API server's webhook
// timeout, and the outcome shows in pullgate's metrics. Then stale-if-error and the circuit
// breaker, which only show over several admissions. The webhook configurations fail closed, so
// that a webhook call that failed (timed out) cannot pass for an admission.
func TestRegistryFaults(t *testing.T) {
	table := &faultTable{}
	t.Cleanup(func() { t.Log("results:\n" + table.String()) })

	faults := []registryFault{{
		name: "mirror down",
		mirror: func(t *testing.T) (string, bool) {
			return e2e.ClosedAddr(t), true
		},
		outcome: "error", code: "error", reason: "connection refused",
	}, {
		name:    "500",
		mirror:  proxied(e2e.ServerError),
		outcome: "error", code: "500", reason: "answered 500",
	}, {
		name:    "429",
		mirror:  proxied(e2e.RateLimited),
		outcome: "error", code: "429", reason: "is rate limiting",
	}, {
		name:    "10s hang",
		mirror:  proxied(e2e.Slow),
		outcome: "timeout", reason: "did not answer",
		why: "every request waits 10s before it is forwarded; pullgate must give up at its 2s budget " +
			"(no request has completed when the metrics are read, so there is no code to count)",
	}, {
		name:    "bad TLS",
		mirror:  untrustedTLS,
		outcome: "error", code: "error", reason: "certificate signed by unknown authority",
		why: "the mirror's certificate comes from a CA the policy does not name",
	}, {
		name:    "lost digest",
		mirror:  proxied(e2e.LoseDigests),
		outcome: "resolved", code: "200", pins: true,
		why: "the mirror answers the tag with a digest it then 404s; by default pullgate takes the " +
			"mirror's word for a tag (one request per miss), so it pins what the node will fail to pull",
	}, {
		name:    "lost digest, verifyDigest",
		mirror:  proxied(e2e.LoseDigests),
		verify:  true,
		outcome: "not_found", code: "404", reason: "for the tag but does not serve it",
		why: "the same mirror; with resolve.verifyDigest pullgate asks for the digest before pinning it",
	}, {
		name:     "lost image, fallbackToUpstream",
		mirror:   proxied(e2e.LoseManifests),
		fallback: true,
		outcome:  "not_found", code: "404", reason: "the mirror does not serve the upstream's",
		why: "the upstream names a digest the mirror 404s; pullgate must not pin what the mirror cannot serve",
	}}

	for _, f := range faults {
		table.order = append(table.order, f.name)
	}
	t.Run("matrix", func(t *testing.T) {
		for _, f := range faults {
			t.Run(f.name, func(t *testing.T) {
				t.Parallel()
				addr, insecure := f.mirror(t)
				for _, onError := range []string{"Keep", "Deny"} {
					t.Run(onError, func(t *testing.T) {
						t.Parallel()
						table.add(admitThroughFault(t, f, addr, insecure, onError))
					})
				}
			})
		}
	})

	t.Run("stale if error", func(t *testing.T) {
		for _, m := range []e2e.FaultMode{e2e.ServerError, e2e.Hang} {
			t.Run(m.String(), func(t *testing.T) {
				t.Parallel()
				table.add(staleIfError(t, m))
			})
		}
	})
	t.Run("circuit breaker", func(t *testing.T) { table.add(circuitBreaker(t)) })
}

// proxied returns a mirror setup: a fault proxy in front of the real mirror, in mode m.
func proxied(m e2e.FaultMode) func(t *testing.T) (string, bool) {
	return func(t *testing.T) (string, bool) {
		p := e2e.StartFaultProxy(t, env.Mirror)
		p.SetMode(m)
		return p.Addr, true
	}
}

// untrustedTLS is the mirror behind HTTPS with a certificate from a CA of its own. It is
// addressed as 0.0.0.0:port, which Linux connects to the loopback listener: for a 127.0.0.1 host
// go-containerregistry would also try plain HTTP (it does for loopback addresses), and report the
// HTTPS server's 400 answer to that instead of the certificate error a remote mirror gives.
func untrustedTLS(t *testing.T) (string, bool) {
	ca, err := e2e.NewCA("untrusted-mirror-ca")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.Serving("untrusted-mirror", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv4zero})
	if err != nil {
		t.Fatal(err)
	}
	p := e2e.StartFaultProxyTLS(t, env.Mirror, kp)
	_, port, err := net.SplitHostPort(p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("0.0.0.0", port)
	// Control: with the CA, the same address serves the registry API. What pullgate fails on is
	// trust, not a broken listener.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}}}
	resp, err := c.Get("https://" + addr + "/v2/")
	if err != nil {
		t.Fatalf("control: GET /v2/ on the TLS mirror with its CA: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("control: GET /v2/ on the TLS mirror with its CA: %s", resp.Status)
	}
	return addr, false
}

// admitThroughFault registers a webhook whose only mirror is addr, creates a pod with a fresh tag
// and checks the admission against f.
func admitThroughFault(t *testing.T, f registryFault, addr string, insecure bool, onError string) faultResult {
	if f.why != "" {
		t.Log(f.why)
	}
	s := e2e.NewScope(t)
	p := env.DefaultPolicy()
	p.Mirrors[0].Mirror = addr
	p.Mirrors[0].Insecure = insecure
	p.Resolve.OnError = onError
	p.Resolve.FallbackToUpstream = f.fallback
	p.Resolve.VerifyDigest = f.verify
	w, _ := env.Pullgate(t, s, p, admissionregistrationv1.Fail)
	ns := env.Namespace(t, s, "enforce")
	env.WaitForMutation(t, ns, env.UpstreamRef("e2e/faults-ready@"+readyDigest))

	repo := "e2e/faults-" + sanitizeRepo(f.name) + "-" + strings.ToLower(onError) + ":v1"
	d := env.PushImage(t, repo)
	image := env.UpstreamRef(repo)
	onMirror := addr + "/" + repo

	r := createThrough(t, w, ns, e2e.NewPod("app", image), f.name, onError, f.reason)
	denied := onError == "Deny" && !f.pins
	switch {
	case denied:
		if r.err == nil {
			t.Fatalf("admitted as %s with onError Deny; want a denial naming %q", r.image, f.reason)
		}
		if msg := r.err.Error(); !strings.Contains(msg, "pullgate: cannot pin to a digest, and the policy says onError: Deny") || !strings.Contains(msg, f.reason) {
			t.Errorf("denial = %q, want pullgate's onError Deny message naming %q", msg, f.reason)
		}
	case r.err != nil:
		t.Fatalf("create failed after %s: %v", r.took, r.err)
	case f.pins:
		if want := onMirror + "@" + d.String(); r.image != want {
			t.Errorf("image = %q, want %q", r.image, want)
		}
		if len(r.warnings) > 0 {
			t.Errorf("warnings %q for a pod that was pinned", r.warnings)
		}
	default:
		if r.image != onMirror {
			t.Errorf("image = %q, want %q (moved to the mirror, left on its tag)", r.image, onMirror)
		}
		if !mentions(r.warnings, "could not pin", f.reason) {
			t.Errorf("warnings %q, want one saying it could not pin, naming %q", r.warnings, f.reason)
		}
	}

	// The outcome in metrics: the resolution, the registry's answer, what happened to the pod.
	r.expect(t, resolveCount, e2e.Labels{"registry": addr, "outcome": f.outcome}, "outcome="+f.outcome, atLeast(1))
	if f.code != "" {
		r.expect(t, requestsTotal, e2e.Labels{"registry": addr, "code": f.code}, "code="+f.code, atLeast(1))
	}
	if f.pins {
		r.expect(t, mutations, e2e.Labels{"action": "pin"}, "pin", exactly(1))
		r.expect(t, unpinnedTotal, nil, "unpinned", exactly(0))
	} else {
		r.expect(t, unpinnedTotal, e2e.Labels{"onError": onError}, "unpinned{"+onError+"}", exactly(1))
	}
	if f.pins {
		// What the node would do with the pin: ask the mirror for that digest.
		notFound, err := headThrough(t.Context(), r.image)
		switch {
		case err != nil:
			t.Errorf("HEAD %s: %v", r.image, err)
		case !notFound:
			t.Errorf("the mirror serves %s: the fault did not take", r.image)
		default:
			r.result += " (the mirror 404s that digest)"
		}
	}
	return r.faultResult
}

// headThrough reports whether the registry answers 404 for ref (host:port/repo@digest, plain
// HTTP).
func headThrough(ctx context.Context, ref string) (notFound bool, err error) {
	host, rest, _ := strings.Cut(ref, "/")
	repo, digest, _ := strings.Cut(rest, "@")
	repo, _, _ = strings.Cut(repo, ":")
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, "http://"+host+"/v2/"+repo+"/manifests/"+digest, nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusNotFound, nil
}

// staleIfError: a digest resolved while the mirror was healthy is served after the mirror broke
// (in mode broken) and the cache entry expired, with a warning, even though the tag has moved
// upstream since. The cache lives in the webhook process, so nothing is restarted: with cacheTTL
// 1s the test waits for the entry to expire, which it sees as the first dry run that comes back
// with the stale warning. A hanging mirror is the case where the stale answer is produced at the
// resolve deadline and must still make it into the response.
func staleIfError(t *testing.T, broken e2e.FaultMode) faultResult {
	s := e2e.NewScope(t)
	proxy := e2e.StartFaultProxy(t, env.Mirror)
	p := env.DefaultPolicy()
	p.Mirrors[0].Mirror = proxy.Addr
	p.Resolve.CacheTTL = "1s"
	w, _ := env.Pullgate(t, s, p, admissionregistrationv1.Fail)
	ns := env.Namespace(t, s, "enforce")

	repo := "e2e/faults-stale-" + broken.String() + ":v1"
	d1 := env.PushImage(t, repo)
	image := env.UpstreamRef(repo)
	want := proxy.Addr + "/" + repo + "@" + d1.String()
	// Pod 1, while the mirror is healthy: resolved and cached.
	env.WaitForMutation(t, ns, image)
	pod1 := create(t, ns, e2e.NewPod("healthy", image))
	if got := pod1.Spec.Containers[0].Image; got != want {
		t.Fatalf("pod 1, mirror healthy: image = %q, want %q", got, want)
	}

	// The mirror breaks, and the tag moves upstream: a digest pod 2 gets can only come from
	// pullgate's cache.
	proxy.SetMode(broken)
	d2 := env.PushImage(t, repo)
	env.WaitForDryRun(t, ns, e2e.NewPod("probe", image), func(_ *corev1.Pod, w []string, err error) bool {
		return err == nil && mentions(w, "pinned to the last known digest")
	})

	// With a hung mirror the dry run's lookup goes on in the background (first sight past the
	// budget); pod 2 joins it and gets the stale answer when its own budget ends, from the
	// cache: the path under test.
	r := createThrough(t, w, ns, e2e.NewPod("stale", image), "stale-if-error: "+broken.String()+" after a healthy resolve", "Keep", "pinned to the last known digest")
	if r.err != nil {
		t.Fatalf("create failed after %s: %v", r.took, r.err)
	}
	if broken == e2e.Hang && r.took < time.Second {
		t.Errorf("create took only %s: it did not wait for the hanging mirror, so the answer at the deadline was not exercised", r.took)
	}
	if r.image != want {
		t.Errorf("pod 2, mirror broken: image = %q, want the last known %q (the tag now names %s)", r.image, want, d2)
	}
	if !mentions(r.warnings, "registry unavailable", "pinned to the last known digest "+d1.String()) {
		t.Errorf("warnings %q, want the stale-digest warning naming %s", r.warnings, d1)
	}
	r.expect(t, resolveCount, e2e.Labels{"registry": proxy.Addr, "outcome": "stale"}, "outcome=stale", atLeast(1))
	r.expect(t, cacheTotal, e2e.Labels{"result": "stale"}, "cache=stale", atLeast(1))
	r.expect(t, unpinnedTotal, nil, "unpinned", exactly(0))
	return r.faultResult
}

// circuitBreaker: after five resolutions against a hanging mirror time out, the circuit opens and
// the next admission does not wait for the mirror at all.
func circuitBreaker(t *testing.T) faultResult {
	const failures = 5 // the resolver's default threshold
	s := e2e.NewScope(t)
	proxy := e2e.StartFaultProxy(t, env.Mirror)
	p := env.DefaultPolicy()
	p.Mirrors[0].Mirror = proxy.Addr
	w, _ := env.Pullgate(t, s, p, admissionregistrationv1.Fail)
	ns := env.Namespace(t, s, "enforce")
	env.WaitForMutation(t, ns, env.UpstreamRef("e2e/faults-ready@"+readyDigest))

	proxy.SetMode(e2e.Hang)
	// Five different tags at once: five registry calls (no singleflight sharing), each running
	// into the 2s budget, so the breaker opens in one budget rather than five.
	review := func(ctx context.Context, repo string) (*admissionv1.AdmissionResponse, time.Duration, error) {
		req, err := e2e.PodRequest(ns, e2e.NewPod("direct", env.UpstreamRef(repo)))
		if err != nil {
			return nil, 0, err
		}
		began := time.Now()
		resp, err := w.Review(ctx, req)
		return resp, time.Since(began), err
	}
	var g errgroup.Group
	for i := range failures {
		g.Go(func() error {
			resp, took, err := review(t.Context(), fmt.Sprintf("e2e/faults-breaker-%d:v1", i))
			if err != nil {
				return err
			}
			if !resp.Allowed || !mentions(resp.Warnings, "could not pin") {
				return fmt.Errorf("review %d (%s): allowed %v, warnings %q; want admitted unpinned", i, took, resp.Allowed, resp.Warnings)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	// The shared registry calls end a little after their callers; the gauge says when the last
	// one has been counted.
	err := e2e.Poll(t.Context(), 10*time.Second, func(ctx context.Context) (bool, error) {
		m, err := w.Metrics(ctx)
		return err == nil && m.Sum(circuitOpen, e2e.Labels{"registry": proxy.Addr}) == 1, nil
	})
	if err != nil {
		t.Fatalf("%s did not report the circuit of %s open after %d timeouts: %v", circuitOpen, proxy.Addr, failures, err)
	}

	// The webhook itself, timed without the API server in between.
	hits := proxy.Hits()
	resp, took, err := review(t.Context(), "e2e/faults-breaker-open:v1")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("webhook answered in %s with the circuit open: %q", took.Round(time.Millisecond), resp.Warnings)
	if limit := 500 * time.Millisecond; took > limit {
		t.Errorf("with the circuit open the webhook took %s, over %s: it waited for the dead mirror", took, limit)
	}
	if !resp.Allowed || !mentions(resp.Warnings, "could not pin", "circuit open") {
		t.Errorf("allowed %v, warnings %q; want admitted with a circuit-open warning", resp.Allowed, resp.Warnings)
	}

	// And through the API server.
	r := createThrough(t, w, ns, e2e.NewPod("app", env.UpstreamRef("e2e/faults-breaker-pod:v1")), fmt.Sprintf("circuit open (after %d hangs)", failures), "Keep", "circuit open")
	if r.err != nil {
		t.Fatalf("create failed after %s: %v", r.took, r.err)
	}
	if !mentions(r.warnings, "could not pin", "circuit open") {
		t.Errorf("warnings %q, want a circuit-open warning", r.warnings)
	}
	if got := proxy.Hits(); got != hits {
		t.Errorf("the hanging mirror received %d requests while the circuit was open", got-hits)
	}
	r.expect(t, resolveCount, e2e.Labels{"registry": proxy.Addr, "outcome": "circuit_open"}, "outcome=circuit_open", atLeast(1))
	r.expect(t, unpinnedTotal, e2e.Labels{"onError": "Keep"}, "unpinned{Keep}", exactly(1))
	r.result += fmt.Sprintf(" (webhook alone: %s)", took.Round(time.Millisecond))
	return r.faultResult
}

// faultResult is one row of the results table.
type faultResult struct {
	fault, onError string
	result         string // admitted pinned, admitted on its tag, denied
	took           time.Duration
	warning        string
	metrics        []string
}

// admission is one pod creation through the API server, with what the test learnt about it.
type admission struct {
	faultResult
	err      error
	image    string // of the stored pod's first container
	warnings []string
	apiTook  time.Duration
	before   e2e.Metrics
	after    e2e.Metrics
}

// createThrough creates pod in ns through the API server, timed, collecting its warnings and
// pullgate's metrics before and after; reason is the phrase the table quotes from a warning or
// denial. It fails t if the call took the API server's webhook
// timeout, or if the API server reports a failed call to w.
func createThrough(t *testing.T, w *e2e.Webhook, ns string, pod *corev1.Pod, fault, onError, reason string) *admission {
	t.Helper()
	ctx := t.Context()
	before, err := w.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	logFrom := fileSize(t, env.APIServerLog)
	c, warnings := env.ClientWithWarnings()
	began := time.Now()
	_, err = c.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	took := time.Since(began)
	a := &admission{err: err, warnings: warnings.Take(), apiTook: took}
	a.fault, a.onError, a.took = fault, onError, took
	if a.after, err = w.Metrics(ctx); err != nil {
		t.Fatal(err)
	}
	a.before = before
	t.Logf("create took %s; error: %v; warnings: %q", took.Round(time.Millisecond), a.err, a.warnings)

	if limit := e2e.WebhookTimeoutSeconds * time.Second; took >= limit {
		t.Errorf("create took %s: the API server's webhook timeout (%s) decided, not pullgate", took, limit)
	}
	if a.err != nil {
		for _, s := range []string{"failed calling webhook", "context deadline exceeded"} {
			if strings.Contains(a.err.Error(), s) && !strings.Contains(a.err.Error(), "pullgate: cannot pin") {
				t.Errorf("the API server failed to call the webhook (%q): %v", s, a.err)
			}
		}
	}
	if lines := apiServerLines(t, logFrom, w.Addr); len(lines) > 0 {
		t.Errorf("the API server logged a problem calling the webhook:\n%s", strings.Join(lines, "\n"))
	}

	texts := a.warnings
	if a.err != nil {
		a.result = "denied"
		texts = []string{a.err.Error()}
	} else {
		stored := get(t, ns, pod.Name)
		a.image = stored.Spec.Containers[0].Image
		a.result = "admitted, tag kept"
		if isPinned(a.image) {
			a.result = "admitted, pinned"
		}
	}
	switch {
	case len(texts) == 0:
		a.warning = "none"
	case reason != "" && mentions(texts, reason):
		a.warning = fmt.Sprintf("yes: %q", reason)
	default:
		a.warning = clipText(texts[0], 80)
	}
	return a
}

// check is a condition on a metric's change.
type check struct {
	ok   func(delta float64) bool
	want string
}

func atLeast(n float64) check {
	return check{func(d float64) bool { return d >= n }, fmt.Sprintf("at least %g", n)}
}

func exactly(n float64) check {
	return check{func(d float64) bool { return d == n }, fmt.Sprintf("%g", n)}
}

// expect checks how much the series of name matching labels moved during the admission, and
// records it for the table.
func (a *admission) expect(t *testing.T, name string, labels e2e.Labels, short string, c check) {
	t.Helper()
	delta := a.after.Sum(name, labels) - a.before.Sum(name, labels)
	a.metrics = append(a.metrics, fmt.Sprintf("%s %+g", short, delta))
	if !c.ok(delta) {
		t.Errorf("%s%v moved by %g, want %s", name, map[string]string(labels), delta, c.want)
	}
}

// apiServerLines returns the API server log lines after offset that mention addr: the API server
// logs nothing about a webhook it called successfully, so any such line reports a failed call
// (its timeout, a refused connection, a bad answer).
func apiServerLines(t *testing.T, offset int64, addr string) []string {
	t.Helper()
	b, err := os.ReadFile(env.APIServerLog)
	if err != nil {
		t.Fatalf("read API server log: %v", err)
	}
	if offset > int64(len(b)) {
		offset = 0
	}
	var out []string
	for _, line := range bytes.Split(b[offset:], []byte("\n")) {
		if bytes.Contains(line, []byte(addr)) {
			out = append(out, string(line))
		}
	}
	return out
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return fi.Size()
}

// faultTable collects rows from parallel subtests, and prints them in the order of order (the
// faults' names), Keep before Deny, then anything else in the order it came.
type faultTable struct {
	order []string
	mu    sync.Mutex
	rows  []faultResult
}

func (ft *faultTable) add(r faultResult) {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	ft.rows = append(ft.rows, r)
}

func (ft *faultTable) String() string {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	rank := func(r faultResult) int {
		i := slices.Index(ft.order, r.fault)
		if i < 0 {
			i = len(ft.order)
		}
		if r.onError == "Deny" {
			return 2*i + 1
		}
		return 2 * i
	}
	slices.SortStableFunc(ft.rows, func(a, b faultResult) int { return rank(a) - rank(b) })
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FAULT\tONERROR\tRESULT\tCREATE\tWARNING / DENIAL\tMETRICS MOVED")
	for _, r := range ft.rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.fault, r.onError, r.result, r.took.Round(time.Millisecond), r.warning, strings.Join(r.metrics, ", "))
	}
	tw.Flush()
	return b.String()
}

func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// sanitizeRepo makes a fault name a repository path component.
func sanitizeRepo(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else if b.Len() > 0 && !strings.HasSuffix(b.String(), "-") {
			b.WriteByte('-')
		}
	}
	return strings.TrimSuffix(b.String(), "-")
}
