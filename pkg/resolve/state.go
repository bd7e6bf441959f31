package resolve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// stateVersion numbers the layout of the state file; a file of another version is ignored.
const stateVersion = 1

// state is what SaveState writes: the digests in the cache, oldest first, with when each was
// resolved, so that TTL and MaxStale apply to them after a restart as they did before.
type state struct {
	Version int          `json:"version"`
	Entries []stateEntry `json:"entries"`
}

type stateEntry struct {
	Key    string    `json:"key"`
	Digest string    `json:"digest"`
	Stored time.Time `json:"stored"`
}

// SaveState writes the cached digests to path, atomically (a temporary file in the same
// directory, renamed), so that a restarted webhook still pins what it knew when a mirror hangs
// on its upstream (stale-if-error). The file is bounded by the cache: at most CacheSize entries
// of a reference and a digest each, and only those still within CacheTTL + MaxStale. Answers
// obtained with a pod's own pull secrets and "not found" answers are not written: the first
// belong to one tenant, the second are cheap to learn again.
func (r *Resolver) SaveState(path string) error {
	cfg := r.cfg.Load()
	now := cfg.now()
	st := state{Version: stateVersion}
	for _, key := range r.cache.lru.Keys() { // oldest first
		e, ok := r.cache.lru.Peek(key)
		if !ok || e.digest == "" || !strings.HasSuffix(key, "\x00") || !now.Before(e.stored.Add(cfg.cacheTTL+cfg.maxStale)) {
			continue
		}
		st.Entries = append(st.Entries, stateEntry{Key: key, Digest: e.digest, Stored: e.stored})
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("resolver state: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".resolver-state-*")
	if err != nil {
		return fmt.Errorf("resolver state: %w", err)
	}
	_, werr := f.Write(b)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(f.Name(), path)
	}
	if werr != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("resolver state: %w", werr)
	}
	return nil
}

// LoadState adds the digests SaveState wrote to path to the cache, skipping those past
// CacheTTL + MaxStale, and returns how many it added. A missing file is not an error (a first
// start); neither is an unreadable one worth failing a start for, but it is returned.
func (r *Resolver) LoadState(path string) (int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("resolver state: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return 0, fmt.Errorf("resolver state %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return 0, fmt.Errorf("resolver state %s: version %d, want %d", path, st.Version, stateVersion)
	}
	cfg := r.cfg.Load()
	now := cfg.now()
	n := 0
	for _, e := range st.Entries {
		if h, err := v1.NewHash(e.Digest); err != nil || h.Algorithm != "sha256" || !strings.HasSuffix(e.Key, "\x00") || !now.Before(e.Stored.Add(cfg.cacheTTL+cfg.maxStale)) {
			continue
		}
		if _, ok := r.cache.lru.Peek(e.Key); ok {
			continue // what this process learned is newer
		}
		r.cache.put(e.Key, entry{digest: e.Digest, stored: e.Stored})
		n++
	}
	return n, nil
}

// PersistState loads path, then saves the cache to it every interval and once more when ctx
// ends (a graceful shutdown), until then. Errors are logged: losing the file costs pins only
// while a mirror is sick right after a restart.
func (r *Resolver) PersistState(ctx context.Context, path string, interval time.Duration) {
	log := logr.FromContextOrDiscard(ctx).WithValues("path", path)
	if n, err := r.LoadState(path); err != nil {
		log.Error(err, "Reading the resolver state; starting with an empty cache")
	} else {
		log.Info("Resolver state loaded", "entries", n)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := r.SaveState(path); err != nil {
				log.Error(err, "Saving the resolver state")
			}
			return
		case <-t.C:
			if err := r.SaveState(path); err != nil {
				log.Error(err, "Saving the resolver state")
			}
		}
	}
}
