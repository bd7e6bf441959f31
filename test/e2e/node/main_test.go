//go:build e2e

package node_test

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/pullgate/pullgate/test/certmanager"
	"github.com/pullgate/pullgate/test/e2e"
)

var (
	// env is the cluster and node shared by every test; pg is pullgate installed on it.
	env *e2e.Env
	pg  *e2e.Release
)

func TestMain(m *testing.M) { os.Exit(e2e.Isolated(func() int { return run(m) })) }

func run(m *testing.M) int {
	opts, err := e2e.NodeOptionsFromEnv()
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e node: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	began := time.Now()
	env, err = e2e.Start(ctx, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e node: start: %v\n", err)
		return 1
	}
	defer env.Close()
	defer env.StopOnInterrupt(ctx)()
	regs := env.Node.Registries
	fmt.Printf("e2e node: node %s Ready %s after start; remote %s, mirror %s, infra %s; logs in %s\n",
		env.Node.Name, time.Since(began).Round(time.Millisecond), regs.Remote, regs.Mirror, regs.Infra, env.Dir)

	stopCM, err := certmanager.Start(ctx, env.Config, filepath.Join(env.Dir, "cert-manager.log"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e node: cert-manager: %v\n", err)
		env.MarkFailed()
		return 1
	}
	defer func() {
		if err := stopCM(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e node: cert-manager: %v\n", err)
		}
	}()
	installed := time.Now()
	if pg, err = env.InstallPullgate(ctx, warmValues(prepullValues())); err != nil {
		fmt.Fprintf(os.Stderr, "e2e node: install pullgate: %v\n", err)
		env.MarkFailed()
		env.SaveLogs(ctx, "pullgate-system")
		return 1
	}
	fmt.Printf("e2e node: pullgate installed by helm and available in %s\n", time.Since(installed).Round(time.Millisecond))

	code := m.Run()
	if code != 0 {
		env.MarkFailed()
		env.SaveLogs(context.WithoutCancel(ctx), pg.Namespace)
	}
	return code
}
