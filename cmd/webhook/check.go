package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pullgate/pullgate/pkg/policy"
)

// runPolicyCheck validates a policy file. Every problem goes to stdout, one a line, with its
// line number and field path, so an operator fixes them all in one pass.
func runPolicyCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("policy check", " FILE")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return badUsage(fs, stderr, "one policy FILE expected")
	}
	path := fs.Arg(0)
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading policy: %w", err)
	}
	c, err := policy.Check(data)
	var perr *policy.Error
	if errors.As(err, &perr) {
		for _, p := range perr.Problems {
			fmt.Fprintf(stdout, "%s: %s\n", path, p)
		}
		return fmt.Errorf("%s: %d problem(s)", path, len(perr.Problems))
	}
	if err != nil {
		return err
	}
	p := c.Policy()
	fmt.Fprintf(stdout, "%s: valid (mode %s, %d mirror(s), %d rule(s), resolve %v)\n", path, p.Mode, len(p.Mirrors), len(p.Rules), c.ResolveEnabled())
	return nil
}
