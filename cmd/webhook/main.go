// Command webhook is pullgate: the admission webhook server, the same mutation offline, and a
// policy checker.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
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
  controller     run the leader-elected controller: pre-pull DaemonSets per policy group
  mutate         apply the policy to an AdmissionReview, Pod or workload manifests offline, same code path as serve
  audit          what the policy would change, or finds not changed (drift), in the running pods
  explain        why a pod, workload or image would be changed as it would, or left alone
  policy check   validate a policy file and print every problem
  prepull render print the pre-pull DaemonSets, pinned through the registries (GitOps)
  prepull status print each pre-pull group's nodes wanted/pulled/pulling/failed and digests
  version        print the version`

// usageError marks a wrong command line (exit code 2).
type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

// errHelp is --help or -h on a subcommand: its usage is printed, and the run succeeds.
var errHelp = errors.New("help requested")

// newFlags is a subcommand's flag set; its usage names the command, its arguments and every
// flag with its default.
func newFlags(command, arguments string) *flag.FlagSet {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: webhook %s%s\n", command, arguments)
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintln(fs.Output(), "\nflags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses args as Go's flag package does for a program: --help prints the usage to
// stdout (errHelp), a wrong flag prints the error and the usage to stderr (a usageError).
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) error {
	var out bytes.Buffer
	fs.SetOutput(&out)
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		_, _ = stdout.Write(out.Bytes())
		return errHelp
	case err != nil:
		_, _ = stderr.Write(out.Bytes())
		return usageError{fs.Name() + ": " + err.Error()}
	}
	return nil
}

// badUsage reports a command line that parsed but makes no sense, with the usage, as a flag
// error would.
func badUsage(fs *flag.FlagSet, stderr io.Writer, msg string) error {
	fs.SetOutput(stderr)
	fs.Usage()
	return usageError{fs.Name() + ": " + msg}
}

// run is main without the process: tests call it with their own streams and context.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	err := runCommand(ctx, args, stdin, stdout, stderr)
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}

func runCommand(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return usageError{"no command given"}
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, args[1:], stdout, stderr)
	case "mutate":
		return runMutate(ctx, args[1:], stdin, stdout, stderr)
	case "audit":
		return runAudit(ctx, args[1:], stdout, stderr)
	case "explain":
		return runExplain(ctx, args[1:], stdin, stdout, stderr)
	case "controller":
		return runController(ctx, args[1:], stdout, stderr)
	case "prepull":
		return runPrepull(ctx, args[1:], stdout, stderr)
	case "policy":
		if len(args) < 2 || args[1] != "check" {
			fmt.Fprintln(stderr, "usage: webhook policy check FILE")
			return usageError{"usage: webhook policy check FILE"}
		}
		return runPolicyCheck(args[2:], stdout, stderr)
	case "version":
		if err := parseFlags(newFlags("version", ""), args[1:], stdout, stderr); err != nil {
			return err
		}
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
