// Command sleeper is the process of every pre-pull container: it keeps the container, and so its
// image, alive and needs nothing from that image (no shell, no libc, any user), and exits 0 on
// SIGTERM or SIGINT. With --install PATH it copies itself to PATH instead: the pre-pull pod's
// init container runs it from pullgate's image to hand it, through an emptyDir, to the images.
//
// It is a separate binary from the webhook because it is copied into every pre-pull pod: it
// imports only os, os/signal and syscall, and hack/build.sh strips it, so it stays near 1 MB
// where the webhook is 35-50 MB.
package main

import (
	"errors"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

const usage = "usage: sleeper [--install PATH]\n"

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr *os.File) int {
	switch {
	case len(args) == 0:
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		return 0
	case len(args) == 2 && (args[0] == "--install" || args[0] == "-install") && args[1] != "":
		if err := install(args[1]); err != nil {
			_, _ = stderr.WriteString("sleeper: " + err.Error() + "\n")
			return 1
		}
		return 0
	}
	_, _ = stderr.WriteString(usage)
	return 2
}

// install copies the running binary to path through a temporary file and a rename, so a
// container started meanwhile never runs half a binary.
func install(path string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(self)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".sleeper-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename, removes nothing
	if _, err := tmp.Write(data); err != nil {
		return errors.Join(err, tmp.Close())
	}
	if err := tmp.Chmod(0o555); err != nil {
		return errors.Join(err, tmp.Close())
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// The destination is the pod spec's own argument, in the pod's own emptyDir.
	return os.Rename(tmp.Name(), path) //nolint:gosec // G703: path is the operator's, not an attacker's

}
