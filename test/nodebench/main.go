// Command nodebench measures what pullgate buys on a real node: pod create -> Running for a large
// image pulled straight from a throttled "remote" registry, through pullgate and a cold or warm
// pull-through mirror, and already on the node, next to a tiny image. It runs the node suite's
// bed (test/e2e: its own namespaces, needs root) and prints one table with the targets.
//
//	make node-bench                      # 1 GiB image, 100 Mbit/s, 30 ms RTT
//	make node-bench ARGS='-size 256MiB -bandwidth 50'
//	make node-bench ARGS=-smoke          # small and quick, keeps it working in CI
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/pullgate/pullgate/test/certmanager"
	"github.com/pullgate/pullgate/test/e2e"
)

func main() { os.Exit(e2e.Isolated(run)) }

type options struct {
	size      int64
	mbits     float64
	rtt       time.Duration
	pods      int
	smoke     bool
	keep      bool
	layerDir  string
	sizeFlag  string
	resultOut string
}

func run() int {
	var o options
	flag.StringVar(&o.sizeFlag, "size", "1GiB", "size of the large image's incompressible data (KiB, MiB, GiB suffixes)")
	flag.Float64Var(&o.mbits, "bandwidth", 100, "remote registry bandwidth, Mbit/s")
	flag.DurationVar(&o.rtt, "rtt", 30*time.Millisecond, "remote registry round-trip time")
	flag.IntVar(&o.pods, "pods", 3, "pods pulling the image through the warm mirror, one after another")
	flag.BoolVar(&o.smoke, "smoke", false, "a 24 MiB image and one warm pod: checks the harness, judges nothing")
	flag.BoolVar(&o.keep, "keep", false, "keep the logs and data directory")
	flag.StringVar(&o.layerDir, "layer-cache", "", "where generated layers are kept between runs (default ~/.cache/pullgate/nodebench)")
	flag.StringVar(&o.resultOut, "o", "", "also write the table to this file")
	flag.Parse()
	if o.smoke {
		o.sizeFlag, o.pods = "24MiB", 1
	}
	var err error
	if o.size, err = parseSize(o.sizeFlag); err != nil {
		fmt.Fprintf(os.Stderr, "nodebench: -size: %v\n", err)
		return 2
	}
	if o.layerDir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			fmt.Fprintf(os.Stderr, "nodebench: %v\n", err)
			return 1
		}
		o.layerDir = filepath.Join(base, "pullgate", "nodebench")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "nodebench: %v\n", err)
		return 1
	}
	return 0
}

func bench(ctx context.Context, o options) (err error) {
	opts, err := e2e.NodeOptionsFromEnv()
	if err != nil {
		return err
	}
	opts.Keep = o.keep
	opts.Link = e2e.LinkOptions{BitsPerSecond: int64(o.mbits * 1e6), RTT: o.rtt}
	env, err := e2e.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			env.MarkFailed()
		}
		env.Close()
	}()
	stopCM, err := certmanager.Start(ctx, env.Config, filepath.Join(env.Dir, "cert-manager.log"))
	if err != nil {
		return err
	}
	defer func() { _ = stopCM() }()
	if _, err := env.InstallPullgate(ctx, warmValues(prepullValues(env))); err != nil {
		return err
	}
	b := &bed{env: env, o: o}
	rows, err := b.measure(ctx)
	if err != nil {
		return err
	}
	return b.print(rows)
}
