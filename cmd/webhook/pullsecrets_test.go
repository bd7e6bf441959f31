package main

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestSecretPresence(t *testing.T) {
	t.Parallel()
	secrets := schema.GroupResource{Resource: "secrets"}
	tests := []struct {
		name                string
		err                 error
		wantExists, wantKnw bool
	}{
		{"exists", nil, true, true},
		{"missing", apierrors.NewNotFound(secrets, "mirror-pull"), false, true},
		{"forbidden", apierrors.NewForbidden(secrets, "mirror-pull", errors.New("not in resourceNames")), false, false},
		{"failing", errors.New("connection refused"), false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int32
			release := make(chan struct{})
			now := time.Unix(1000, 0)
			var mu sync.Mutex
			s := &secretPresence{
				head: func(context.Context, string, string) error {
					calls.Add(1)
					<-release
					return tc.err
				},
				now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now },
			}
			// A burst of 100 admissions for one namespace and name costs one read.
			var wg sync.WaitGroup
			for range 100 {
				wg.Go(func() {
					if exists, known := s.Exists(t.Context(), "apps", "mirror-pull"); exists != tc.wantExists && known {
						t.Errorf("Exists = %v, %v", exists, known)
					}
				})
			}
			time.Sleep(50 * time.Millisecond)
			close(release)
			wg.Wait()
			if exists, known := s.Exists(t.Context(), "apps", "mirror-pull"); exists != tc.wantExists || known != tc.wantKnw {
				t.Errorf("Exists = %v, %v, want %v, %v", exists, known, tc.wantExists, tc.wantKnw)
			}
			if n := calls.Load(); n != 1 {
				t.Errorf("%d reads for a burst of 100, want 1", n)
			}
			// Another namespace is another read; the cached answer expires.
			s.Exists(t.Context(), "other", "mirror-pull")
			mu.Lock()
			now = now.Add(presentSecretTTL + time.Second)
			mu.Unlock()
			s.Exists(t.Context(), "apps", "mirror-pull")
			if n := calls.Load(); n != 3 {
				t.Errorf("%d reads, want 3 (after another namespace and the TTL)", n)
			}
		})
	}
}

// An admission does not wait long for a slow API server, and a cancelled one not at all: the
// answer is unknown, so no warning.
func TestSecretPresenceSlow(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	s := &secretPresence{head: func(context.Context, string, string) error { <-release; return nil }}
	began := time.Now()
	if exists, known := s.Exists(t.Context(), "apps", "slow"); exists || known {
		t.Errorf("Exists = %v, %v, want unknown", exists, known)
	}
	if took := time.Since(began); took > secretPresenceWait+time.Second {
		t.Errorf("waited %s", took)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, known := s.Exists(ctx, "apps", "cancelled"); known {
		t.Error("a cancelled admission got an answer")
	}
}
