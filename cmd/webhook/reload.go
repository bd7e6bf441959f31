package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"

	"github.com/pullgate/pullgate/pkg/policy"
)

// pollInterval backs up file events: ConfigMap volumes update by swapping a symlink, and
// some filesystems deliver no event at all. Re-reading a small file this often costs nothing.
const pollInterval = 5 * time.Second

// policyStore holds the policy in force and replaces it when the file changes. A bad new file
// is rejected and logged; the last good policy stays active.
type policyStore struct {
	path     string
	log      logr.Logger
	onChange func() // called after each successful swap, under the load lock

	cur  atomic.Pointer[policy.Compiled]
	mu   sync.Mutex // serialises loads
	last []byte     // content of the last file read, good or bad
}

var _ interface{ Current() *policy.Compiled } = (*policyStore)(nil)

// Current returns the policy in force, or nil before the first successful load.
func (s *policyStore) Current() *policy.Compiled { return s.cur.Load() }

// load reads the file and swaps the policy if the content changed and is valid.
func (s *policyStore) load() (changed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := os.ReadFile(s.path)
	if err != nil {
		return false, fmt.Errorf("reading policy: %w", err)
	}
	if s.last != nil && bytes.Equal(data, s.last) {
		return false, nil
	}
	s.last = data
	c, err := policy.Check(data)
	if err != nil {
		return false, fmt.Errorf("%s: %w", s.path, err)
	}
	s.cur.Store(c)
	if s.onChange != nil {
		s.onChange()
	}
	return true, nil
}

// watch reloads on file events and on a timer until ctx ends.
func (s *policyStore) watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching policy: %w", err)
	}
	defer w.Close()
	// Watch the directory: editors and the kubelet replace the file rather than write it.
	if err := w.Add(filepath.Dir(s.path)); err != nil {
		return fmt.Errorf("watching policy directory: %w", err)
	}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.Events:
		case err := <-w.Errors:
			s.log.Error(err, "Policy file watch")
		case <-tick.C:
		}
		changed, err := s.load()
		switch {
		case err != nil:
			s.log.Error(err, "Rejected new policy; keeping the last good one", "path", s.path)
		case changed:
			s.log.Info("Loaded new policy", "path", s.path)
		}
	}
}
