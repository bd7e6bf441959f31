package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/pullgate/pullgate/pkg/mutate"
)

// How long an answer about a pull secret's existence is reused. A burst of a hundred pods costs
// one read per namespace and secret; a secret created after a warning is seen within
// missingSecretTTL, so the next pod is admitted without one.
const (
	presentSecretTTL = 30 * time.Second
	missingSecretTTL = 10 * time.Second
	// secretPresenceWait is how long an admission waits for a read it does not find in the
	// cache; the read goes on (up to podSecretReadTimeout) and answers the next pods. It keeps
	// the check well inside the webhook timeout, which leaves room for resolve.timeout.
	secretPresenceWait = 300 * time.Millisecond
	maxSecretPresence  = 10000
)

// secretPresence answers whether the pull secrets the policy injects exist in a pod's
// namespace. It asks for the Secret's metadata only: pullgate needs to know that it is there,
// never its credentials, and the chart grants get on exactly the names the policy injects.
type secretPresence struct {
	// head reads one Secret's metadata; nil error means it exists.
	head func(ctx context.Context, namespace, name string) error
	now  func() time.Time

	flights singleflight.Group
	mu      sync.Mutex
	known   map[secretKey]presence
}

type secretKey struct{ namespace, name string }

type presence struct {
	exists, known bool
	expires       time.Time
}

var _ mutate.SecretChecker = (*secretPresence)(nil)

func newSecretPresence(client kubernetes.Interface) *secretPresence {
	rc := client.CoreV1().RESTClient()
	return &secretPresence{head: func(ctx context.Context, namespace, name string) error {
		return rc.Get().Namespace(namespace).Resource("secrets").Name(name).
			SetHeader("Accept", "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1").
			Do(ctx).Error()
	}}
}

// Exists answers from the cache: a map lookup on the warm path.
func (s *secretPresence) Exists(ctx context.Context, namespace, name string) (bool, bool) {
	key := secretKey{namespace, name}
	s.mu.Lock()
	p, ok := s.known[key]
	s.mu.Unlock()
	if ok && s.clock().Before(p.expires) {
		return p.exists, p.known
	}
	ch := s.flights.DoChan(namespace+"/"+name, func() (any, error) {
		// Detached from the first admission: every pod asking meanwhile waits for this read.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), podSecretReadTimeout)
		defer cancel()
		err := s.head(ctx, namespace, name)
		p := presence{exists: err == nil, known: err == nil || apierrors.IsNotFound(err)}
		ttl := presentSecretTTL
		if !p.exists {
			ttl = missingSecretTTL
		}
		if !p.known {
			// Forbidden (the chart's role does not list the name) or the API server failing:
			// say nothing at admission rather than warn wrongly, and ask again a little later.
			ctrllog.FromContext(ctx).Error(fmt.Errorf("reading the metadata of secret %s/%s: %w", namespace, name, err), "Cannot tell whether a pull secret exists; no warning given")
		}
		p.expires = s.clock().Add(ttl)
		s.mu.Lock()
		if s.known == nil || len(s.known) >= maxSecretPresence {
			s.known = map[secretKey]presence{}
		}
		s.known[key] = p
		s.mu.Unlock()
		return p, nil
	})
	timer := time.NewTimer(secretPresenceWait)
	defer timer.Stop()
	select {
	case res := <-ch:
		p := res.Val.(presence)
		return p.exists, p.known
	case <-timer.C:
	case <-ctx.Done():
	}
	return false, false
}

func (s *secretPresence) clock() time.Time {
	if s.now != nil {
		return s.now()
	}
	return time.Now()
}
