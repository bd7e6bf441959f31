package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

func main() {
	// Children are started from this goroutine; locked, its thread lives as long as the
	// process, so their parent-death signal means "the load test is gone" (see startChild).
	runtime.LockOSThread()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	switch {
	case len(os.Args) > 1 && os.Args[1] == floorCommand:
		err = runFloor(ctx, os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == warmerCommand:
		err = runWarmer(ctx, os.Args[2:])
	default:
		err = run(ctx, os.Args[1:], os.Stdout)
	}
	stop()
	if err != nil {
		_, _ = fmt.Fprintln(os.Stderr, "load: "+err.Error())
		os.Exit(1)
	}
}

type options struct {
	webhook     string
	duration    time.Duration
	concurrency int
	rate        int
	warmTags    int
	coldTags    int
	burst       int
	burstRounds int
	rounds      int
	delay       time.Duration
	delayAll    bool
	slowImages  int
	cached      int
	smoke       bool
	dir         string
	keep        bool
	cpuprofile  string
	only        []string
	warming     bool
	warmSize    int64
	warmMbits   float64
}

func parse(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.webhook, "webhook", "../bin/webhook", "the webhook binary under test")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long each throughput scenario runs")
	fs.IntVar(&o.concurrency, "concurrency", 16, "requests in flight at most (vegeta workers)")
	fs.IntVar(&o.rate, "rate", 0, "requests per second; 0 runs a closed loop: -concurrency requests always in flight")
	fs.IntVar(&o.rounds, "rounds", 4, "slices the warm scenario's -duration is cut into, alternating pullgate and the floor")
	fs.IntVar(&o.warmTags, "warm-tags", 50, "distinct tags the warm scenario repeats")
	fs.IntVar(&o.coldTags, "cold-tags", 0, "tags pushed for the cold scenarios, which stop when they are used up; 0 sizes them from -duration")
	fs.IntVar(&o.burst, "burst", 200, "concurrent requests for one new tag in the burst scenario")
	fs.IntVar(&o.burstRounds, "burst-rounds", 5, "bursts, each for a new tag")
	fs.DurationVar(&o.delay, "delay", 50*time.Millisecond, "registry delay per manifest request in the slow-registry scenario")
	fs.BoolVar(&o.delayAll, "delay-all", false, "in the slow-registry scenario, delay every registry request (the /v2/ ping too), as a distant registry would")
	fs.IntVar(&o.slowImages, "slow-containers", 5, "containers per pod in the slow-registry scenario")
	fs.IntVar(&o.cached, "cached", 10000, "distinct tags driven through the webhook before its memory is read")
	fs.BoolVar(&o.smoke, "smoke", false, "about a second per scenario, 1 burst, 1000 cached digests: keeps the harness working in CI")
	fs.StringVar(&o.dir, "dir", "", "work directory for certificates, policy and logs (default: a temporary one)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the webhook during the warm scenario to this file (go tool pprof FILE)")
	fs.BoolVar(&o.warming, "warming", false, "run the warm scenario (pullgate and the floor alike) while a stand-in controller warms a large image through a local mirror on this machine")
	fs.Int64Var(&o.warmSize, "warm-size", 1<<30, "bytes of the image -warming reads, over and over")
	fs.Float64Var(&o.warmMbits, "warm-mbits", 400, "bandwidth of the mirror -warming reads through, Mbit/s")
	only := fs.String("only", "", "comma-separated scenarios to run: warm (with the floor), cold, burst, slow, memory (default all)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if *only != "" {
		o.only = strings.Split(*only, ",")
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.smoke {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["duration"] {
			o.duration = time.Second
		}
		if !set["burst-rounds"] {
			o.burstRounds = 1
		}
		if !set["cached"] {
			o.cached = 1000
		}
	}
	if o.concurrency < 1 || o.rounds < 1 || o.burst < 1 || o.burstRounds < 1 || o.warmTags < 1 || o.cached < 1 || o.slowImages < 1 || o.duration <= 0 || o.warmSize < 1 || o.warmMbits <= 0 {
		return o, errors.New("-concurrency, -rounds, -burst, -burst-rounds, -warm-tags, -cached, -slow-containers, -duration, -warm-size and -warm-mbits must be positive")
	}
	return o, nil
}

func run(ctx context.Context, args []string, out io.Writer) error {
	o, err := parse(args, out)
	if err != nil {
		return err
	}
	bin, err := filepath.Abs(o.webhook)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("webhook binary: %w (make build)", err)
	}
	o.webhook = bin
	if o.dir == "" {
		if o.dir, err = os.MkdirTemp("", "pullgate-load-"); err != nil {
			return err
		}
	}
	h, err := newHarness(o, out)
	if err != nil {
		return err
	}
	defer h.close()
	err = h.run(ctx)
	if err == nil && !o.keep {
		_ = os.RemoveAll(o.dir)
	} else {
		_, _ = fmt.Fprintf(out, "\nlogs and files: %s\n", o.dir)
	}
	return err
}

// header says what the figures are worth on this machine.
func header(o options, out io.Writer) {
	version := "unknown"
	if b, err := exec.Command(o.webhook, "version").Output(); err == nil { //nolint:gosec // G204: the binary under test
		version = strings.TrimSpace(string(b))
	}
	loop := fmt.Sprintf("closed loop, %d requests in flight", o.concurrency)
	if o.rate > 0 {
		loop = fmt.Sprintf("%d req/s, at most %d in flight", o.rate, o.concurrency)
	}
	_, _ = fmt.Fprintf(out, "pullgate load test: webhook %s, %s, %s/%s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	_, _ = fmt.Fprintf(out, "machine: %d CPUs (%s), load average %s\n", runtime.NumCPU(), cpuModel(), loadAverage())
	_, _ = fmt.Fprintf(out, "NOTE: the load generator (vegeta), the mirror registry and the webhook share these %d CPUs;\n", runtime.NumCPU())
	_, _ = fmt.Fprintln(out, "      absolute figures are what is left for the webhook, so compare rows of one run (pullgate/floor).")
	_, _ = fmt.Fprintf(out, "load: %s, %s per scenario, HTTPS (TLS 1.2+, HTTP/1.1, keep-alive), a fresh webhook process per scenario\n", loop, o.duration)
	if o.smoke {
		_, _ = fmt.Fprintln(out, "SMOKE RUN: scenarios shortened; figures are not meaningful")
	}
	_, _ = fmt.Fprintln(out)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
