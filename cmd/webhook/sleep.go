package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// runSleep is the process of every pre-pull container: it keeps the container (and so its
// image) alive, needing nothing from the image, and exits 0 on SIGTERM or SIGINT (main's
// context). With --install it copies its own binary to PATH instead, for the init container
// that hands it to the pre-pulled images through an emptyDir.
func runSleep(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("sleep", " [--install PATH]")
	install := fs.String("install", "", "copy this binary to PATH (executable) and exit, instead of sleeping")
	if err := parseFlags(fs, args, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return badUsage(fs, stderr, fmt.Sprintf("unexpected argument %q", fs.Arg(0)))
	}
	if *install != "" {
		return installSelf(*install)
	}
	<-ctx.Done()
	return nil
}

// installSelf copies the running binary to path through a temporary file and a rename, so a
// container started meanwhile never runs half a binary.
func installSelf(path string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding this binary: %w", err)
	}
	src, err := os.Open(self)
	if err != nil {
		return fmt.Errorf("reading this binary: %w", err)
	}
	defer src.Close()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".sleeper-*")
	if err != nil {
		return fmt.Errorf("installing the sleeper: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename, removes nothing
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return fmt.Errorf("installing the sleeper: %w", err)
	}
	if err := tmp.Chmod(0o555); err != nil {
		tmp.Close()
		return fmt.Errorf("installing the sleeper: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("installing the sleeper: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("installing the sleeper: %w", err)
	}
	return nil
}
