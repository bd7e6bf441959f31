//go:build e2e

package e2e_test

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/pullgate/pullgate/test/e2e"
)

// env is the control plane and registries shared by every test in the suite.
var env *e2e.Env

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	opts, err := e2e.OptionsFromEnv()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	began := time.Now()
	env, err = e2e.Start(ctx, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: start: %v\n", err)
		return 1
	}
	defer env.Close()
	fmt.Printf("e2e: kube-apiserver %s, upstream %s, mirror %s up in %s; logs in %s\n",
		env.Config.Host, env.Upstream, env.Mirror, time.Since(began).Round(time.Millisecond), env.Dir)

	finished := env.StopOnInterrupt(ctx)
	code := m.Run()
	finished()
	if code != 0 {
		env.MarkFailed()
	}
	return code
}
