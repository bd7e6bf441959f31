// Command pause is the node suite's pod sandbox image (registry.k8s.io/pause cannot be reached
// from here): it waits for SIGTERM or SIGINT and exits, so sandboxes stop without a kill timeout.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}
