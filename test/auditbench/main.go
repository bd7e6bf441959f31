// Command auditbench measures pullgate's reports at scale on the API-server bed of test/e2e
// (etcd, kube-apiserver, the upstream registry and its pull-through mirror; no kubelet, so pods
// stay Pending): thousands of pods of Deployments in several namespaces, a few hundred distinct
// images. It times `webhook audit` and the controller's report scans, reads the controller's peak
// RSS, the largest report object, and counts the registry requests against the distinct tags.
// `make audit-bench` runs it; -pods and -images make it smaller.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/pullgate/pullgate/test/certmanager"
	"github.com/pullgate/pullgate/test/e2e"
)

// Targets of issue 15.
const (
	maxSeconds   = 30
	maxRSS       = 150 << 20
	maxReport    = 256 << 10
	podsPerOwner = 10
	// bigNamespace holds half the pods: a report bounded at 100 results.
	bigNamespace = "bench-big"
)

func main() {
	pods := flag.Int("pods", 10000, "pods to create")
	images := flag.Int("images", 300, "distinct images (tags)")
	namespaces := flag.Int("namespaces", 10, "namespaces (one holds half the pods)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, *pods, *images, *namespaces)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "auditbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, pods, images, namespaces int) error {
	opts, err := e2e.OptionsFromEnv()
	if err != nil {
		return err
	}
	began := time.Now()
	env, err := e2e.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer env.Close()
	fmt.Printf("bed up in %s (logs in %s)\n", time.Since(began).Round(time.Millisecond), env.Dir)

	refs, err := push(ctx, env, images)
	if err != nil {
		return err
	}
	proxy, err := countingProxy(env.Mirror)
	if err != nil {
		return err
	}
	policyPath := filepath.Join(env.Dir, "bench-policy.yaml")
	pol := env.DefaultPolicy()
	pol.Mirrors = []e2e.Mirror{{Registry: env.Upstream, Mirror: proxy.addr, Insecure: true}}
	pol.Resolve.Timeout = "4s"
	if err := e2e.WritePolicy(policyPath, pol); err != nil {
		return err
	}

	cfg := *env.Config
	cfg.QPS, cfg.Burst = 2000, 4000
	kube := kubernetes.NewForConfigOrDie(&cfg)
	began = time.Now()
	if err := createPods(ctx, kube, refs, pods, namespaces); err != nil {
		return err
	}
	fmt.Printf("%d pods in %d namespaces, %d distinct images, created in %s\n", pods, namespaces, len(refs), time.Since(began).Round(time.Millisecond))

	// The first audit fills the mirror from the upstream; the second is the measured one.
	if _, err := audit(ctx, env, policyPath); err != nil {
		return err
	}
	proxy.reset()
	a, err := audit(ctx, env, policyPath)
	if err != nil {
		return err
	}
	auditTags, auditTotal := proxy.tags.Load(), proxy.total.Load()

	dir, err := e2e.ModuleDirOf(ctx, "github.com/openreports/reports-api@v0.2.1")
	if err != nil {
		return err
	}
	crds, err := certmanager.CRDs(filepath.Join(dir, "config", "crd"))
	if err == nil {
		err = certmanager.InstallCRDs(ctx, env.Config, crds)
	}
	if err != nil {
		return err
	}
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "pullgate-bench"}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	proxy.reset()
	logPath := filepath.Join(env.Dir, "controller.log")
	ctrl, err := env.RunController(logPath, policyPath, "pullgate-bench", "--reports", "--report-interval", "1m")
	if err != nil {
		return err
	}
	defer ctrl.Stop(5 * time.Second)
	first, err := waitScan(ctx, logPath, 1, 3*time.Minute)
	if err != nil {
		return err
	}
	coldTags := proxy.tags.Load()
	proxy.reset()
	// A change: one more pod; the next scan, a second later, finds every tag in its cache.
	if err := createOne(ctx, kube, refs[0]); err != nil {
		return err
	}
	second, err := waitScan(ctx, logPath, 2, 2*time.Minute)
	if err != nil {
		return err
	}
	warmTags := proxy.tags.Load()
	hwm, err := vmHWM(ctrl.Pid())
	if err != nil {
		return err
	}
	largest, which, bigResults, omitted, err := largestReport(ctx, env)
	if err != nil {
		return err
	}

	verdict := func(ok bool) string {
		if ok {
			return "ok"
		}
		return "OVER TARGET"
	}
	fmt.Printf("\n%-58s %s\n", "figure", "value")
	fmt.Printf("%-58s %s  %s (target < %ds)\n", "webhook audit, all namespaces, -o json (mirror warm)", a.took.Round(time.Millisecond), verdict(a.took < maxSeconds*time.Second), maxSeconds)
	fmt.Printf("%-58s %d MiB\n", "webhook audit peak RSS", a.maxRSS>>20)
	fmt.Printf("%-58s %d for %d distinct tags (%d requests in all)  %s\n", "webhook audit tag lookups at the mirror (own cache cold)", auditTags, len(refs), auditTotal, verdict(auditTags == int64(len(refs))))
	fmt.Printf("%-58s %s (%d tag lookups)\n", "controller first scan (resolver cache cold)", first.Round(time.Millisecond), coldTags)
	fmt.Printf("%-58s %s  %s (target < %ds)\n", "controller scan after a change (cache warm)", second.Round(time.Millisecond), verdict(second < maxSeconds*time.Second), maxSeconds)
	fmt.Printf("%-58s %d  %s\n", "controller tag lookups in the warm scan", warmTags, verdict(warmTags == 0))
	fmt.Printf("%-58s %d MiB  %s (target < %d MiB)\n", "controller peak RSS (VmHWM)", hwm>>20, verdict(hwm < maxRSS), maxRSS>>20)
	fmt.Printf("%-58s %d KiB (%s)  %s (target < %d KiB)\n", "largest report object", largest>>10, which, verdict(largest < maxReport), maxReport>>10)
	fmt.Printf("%-58s %d results, %s left out\n", "report of "+bigNamespace+" ("+strconv.Itoa(pods/2)+" pods)", bigResults, omitted)
	return nil
}

type auditRun struct {
	took   time.Duration
	maxRSS int64
}

// audit runs webhook audit on the whole cluster; its output is kept in the bed's directory.
func audit(ctx context.Context, env *e2e.Env, policyPath string) (auditRun, error) {
	cmd := exec.CommandContext(ctx, env.Opts.Webhook, "audit", "--kubeconfig", env.Kubeconfig, "--policy", policyPath, "-o", "json")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	began := time.Now()
	out, err := cmd.Output()
	took := time.Since(began)
	if err != nil {
		return auditRun{}, fmt.Errorf("webhook audit: %w\n%s", err, stderr.String())
	}
	if err := os.WriteFile(filepath.Join(env.Dir, "audit.json"), out, 0o644); err != nil {
		return auditRun{}, err
	}
	fmt.Printf("webhook audit: %s, %d KiB of reports; %s", took.Round(time.Millisecond), len(out)>>10, lastLine(stderr.String()))
	ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	var rss int64
	if ru != nil {
		rss = ru.Maxrss << 10
	}
	return auditRun{took: took, maxRSS: rss}, nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1] + "\n"
}

var scanned = regexp.MustCompile(`"msg":"Scanned".*"took":"([^"]+)"`)

// waitScan waits until the controller's log holds n "Scanned" lines and returns the nth's time.
func waitScan(ctx context.Context, logPath string, n int, timeout time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		raw, err := os.ReadFile(logPath)
		if err != nil {
			return 0, err
		}
		if m := scanned.FindAllSubmatch(raw, -1); len(m) >= n {
			return time.ParseDuration(string(m[n-1][1]))
		}
		time.Sleep(200 * time.Millisecond)
	}
	return 0, fmt.Errorf("no scan %d within %s:\n%s", n, timeout, e2e.Tail(logPath, 20))
}

// vmHWM is a process's peak resident set size.
func vmHWM(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}

// largestReport is the size of the largest report object as stored, and the big namespace's
// results and omitted count.
func largestReport(ctx context.Context, env *e2e.Env) (int, string, int, string, error) {
	dyn := dynamic.NewForConfigOrDie(env.Config)
	gv := schema.GroupVersion{Group: "openreports.io", Version: "v1alpha1"}
	largest, which, results, omitted := 0, "", 0, "0"
	ns, err := dyn.Resource(gv.WithResource("reports")).Namespace("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, "", 0, "", err
	}
	cl, err := dyn.Resource(gv.WithResource("clusterreports")).List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, "", 0, "", err
	}
	for _, u := range append(ns.Items, cl.Items...) {
		raw, err := json.Marshal(u.Object)
		if err != nil {
			return 0, "", 0, "", err
		}
		if len(raw) > largest {
			largest, which = len(raw), u.GetKind()+" "+strings.TrimPrefix(u.GetNamespace()+"/"+u.GetName(), "/")
		}
		if u.GetNamespace() == bigNamespace {
			r, _ := u.Object["results"].([]any)
			results = len(r)
			if o := u.GetAnnotations()["pullgate.dev/omitted-results"]; o != "" {
				omitted = o
			}
		}
	}
	return largest, which, results, omitted, nil
}
