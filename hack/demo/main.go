// Command demo runs pullgate's offline mutation against a real registry on 127.0.0.1: it starts
// an in-process OCI registry playing the mirror, pushes small random images where the example
// pod's images would live on it, writes a policy pointing every upstream at it, and runs
// `webhook mutate` on examples/pod.yaml. Used by `make run`.
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func main() {
	if err := run(); err != nil {
		log.Fatalf("demo: %v", err)
	}
}

func run() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0))), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	mirror := ln.Addr().String()

	for _, repo := range []string{"dockerhub/library/busybox:1.36", "dockerhub/library/nginx:latest", "nvcr/nvidia/pytorch:24.05-py3", "ghcr/example/dataset:v3"} {
		ref, err := name.NewTag(mirror + "/" + repo)
		if err != nil {
			return err
		}
		img, err := random.Image(512, 1)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = remote.Write(ref, img, remote.WithContext(ctx))
		cancel()
		if err != nil {
			return fmt.Errorf("pushing %s: %w", ref, err)
		}
		d, _ := img.Digest()
		fmt.Printf("mirror holds %s = %s\n", ref, d)
	}

	dir, err := os.MkdirTemp("", "pullgate-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	policyPath := filepath.Join(dir, "policy.yaml")
	policy := fmt.Sprintf(`apiVersion: pullgate.dev/v1alpha1
kind: Policy
mode: Enforce
mirrors:
  - {registry: docker.io, mirror: %[1]s/dockerhub, insecure: true}
  - {registry: nvcr.io, mirror: %[1]s/nvcr, insecure: true}
  - {registry: ghcr.io, mirror: %[1]s/ghcr, insecure: true}
resolve: {timeout: 2s, onError: Keep}
pullPolicy: IfNotPresent
imagePullSecrets: [mirror-pull]
`, mirror)
	if err := os.WriteFile(policyPath, []byte(policy), 0o600); err != nil {
		return err
	}
	fmt.Printf("\n--- policy\n%s\n--- webhook mutate --policy policy.yaml -f examples/pod.yaml\n", policy)
	bin := "bin/webhook"
	if len(os.Args) > 1 {
		bin = os.Args[1]
	}
	cmd := exec.Command(bin, "mutate", "--policy", policyPath, "-f", "examples/pod.yaml")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd.Run()
}
