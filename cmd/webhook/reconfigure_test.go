package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/pullgate/pullgate/pkg/resolve"
)

// slowResolver records what it was last configured with; its first Configure hangs until
// released, as a tick that is slow to read its secrets would.
type slowResolver struct {
	started, release chan struct{}
	first            atomic.Bool

	mu   sync.Mutex
	last resolve.Options
}

func (r *slowResolver) Configure(o resolve.Options) error {
	if r.first.CompareAndSwap(false, true) {
		close(r.started)
		<-r.release
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.last = o
	return nil
}

// TestReconfigureReloadRace: a credential refresh tick that read the old policy has not applied
// it yet when the policy is reloaded. The resolver must end on the new policy's registries, not
// on the old ones the tick started with.
func TestReconfigureReloadRace(t *testing.T) {
	t.Parallel()
	policyFor := func(host string) string {
		return fmt.Sprintf("apiVersion: pullgate.dev/v1alpha1\nkind: Policy\nmirrors: [{registry: docker.io, mirror: %s/hub}]\n", host)
	}
	path := writeFile(t, "policy.yaml", policyFor("old.example.com"))
	store := &policyStore{path: path, log: logr.Discard()}
	if _, err := store.load(); err != nil {
		t.Fatal(err)
	}
	res := &slowResolver{started: make(chan struct{}), release: make(chan struct{})}
	reconfig := &reconfigurer{policy: store, secrets: &secrets{}, resolver: res, log: logr.Discard()}
	store.onChange = func() { reconfig.apply(context.Background()) }

	var wg sync.WaitGroup
	wg.Go(func() { reconfig.apply(context.Background()) }) // the tick
	<-res.started
	if err := os.WriteFile(path, []byte(policyFor("new.example.com")), 0o600); err != nil {
		t.Fatal(err)
	}
	wg.Go(func() { // the watcher's reload
		if _, err := store.load(); err != nil {
			t.Error(err)
		}
	})
	time.Sleep(100 * time.Millisecond) // time enough for an unserialized reload to finish first
	close(res.release)
	wg.Wait()

	res.mu.Lock()
	defer res.mu.Unlock()
	if _, ok := res.last.Registries["new.example.com"]; !ok || len(res.last.Registries) != 1 {
		t.Errorf("resolver left on registries %v, want only new.example.com's", keys(res.last.Registries))
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
