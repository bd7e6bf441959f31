package main

import (
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
)

// TestUnlistedPrivateRegistry: an image on a registry the policy neither mirrors nor lists is
// resolved only on a public address, so a pod author cannot aim pullgate at in-cluster services;
// listing the registry (or allowPrivateUnlisted) lets pullgate pin it.
// memRegistry serves an in-memory registry over plain HTTP for the test; it returns host:port.
func memRegistry(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestUnlistedPrivateRegistry(t *testing.T) {
	t.Parallel()
	host := memRegistry(t)
	digest := pushRandom(t, host, "team/app:v1")
	ref, _ := name.NewTag(host + "/team/app:v1")
	pod := writeFile(t, "pod.yaml", fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: %q}]}\n", ref.String()))
	base := "apiVersion: pullgate.dev/v1alpha1\nkind: Policy\n"

	cases := []struct {
		name, policy, wantImage, wantWarning string
	}{
		{"unlisted", base, ref.String(), "list it in the policy"},
		{"listed", base + fmt.Sprintf("registries: [{host: %q, insecure: true}]\n", host), ref.String() + "@" + digest, ""},
		// Allowed to connect, but an unlisted registry is spoken to over HTTPS only, and this one is
		// plain HTTP: the warning says how to list it.
		{"allowPrivateUnlisted", base + "resolve: {allowPrivateUnlisted: true}\n", ref.String(), "insecure"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, err := runCmd(t, "", "mutate", "--policy", writeFile(t, "policy.yaml", tc.policy), "-f", pod)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, "image: "+tc.wantImage+"\n") {
				t.Errorf("want image %s in:\n%s", tc.wantImage, out)
			}
			if tc.wantWarning != "" && !strings.Contains(stderr, tc.wantWarning) {
				t.Errorf("want a warning with %q, got %q", tc.wantWarning, stderr)
			}
			if tc.name != "unlisted" && strings.Contains(stderr, "forbidden address") {
				t.Errorf("the address guard should not apply: %q", stderr)
			}
		})
	}
}
