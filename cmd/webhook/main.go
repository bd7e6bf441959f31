// Command webhook is pullgate: the admission webhook server, the same mutation offline, and a
// policy checker.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "webhook: "+oneLine(err.Error()))
		var u usageError
		if errors.As(err, &u) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

const usage = `usage: webhook <command> [flags]

commands:
  serve          run the HTTPS admission webhook (POST /mutate-v1-pod)
  mutate         apply the policy to an AdmissionReview or Pod offline, same code path as serve
  policy check   validate a policy file and print every problem
  version        print the version`

// usageError marks a wrong command line (exit code 2).
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

// run is main without the process: tests call it with their own streams and context.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return usageError{"no command given"}
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, args[1:], stderr)
	case "mutate":
		return runMutate(ctx, args[1:], stdin, stdout, stderr)
	case "policy":
		if len(args) < 2 || args[1] != "check" {
			return usageError{"usage: webhook policy check FILE"}
		}
		return runPolicyCheck(args[2:], stdout)
	case "version":
		fmt.Fprintln(stdout, version)
		return nil
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	fmt.Fprintln(stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", args[0])}
}

// oneLine keeps error output to a single line, as scripts and kubectl users expect.
func oneLine(s string) string {
	out := []rune(s)
	for i, r := range out {
		if r == '\n' || r == '\r' {
			out[i] = ' '
		}
	}
	return string(out)
}
