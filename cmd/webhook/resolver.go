package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/pullgate/pullgate/pkg/policy"
	"github.com/pullgate/pullgate/pkg/resolve"
)

// podSecretTTL bounds how long a pod pull secret, once read, is reused. Pods' secrets are read
// on every admission that resolves, cache hits included: a scale-up of a hundred pods must cost
// one API call per secret, not a hundred. A rotated secret is picked up within this time.
const podSecretTTL = 30 * time.Second

// maxPodSecrets bounds the pull secrets kept; dropping them all is cheap, the next admissions
// read them again.
const maxPodSecrets = 10000

// podSecretReadTimeout bounds one shared read, which outlives the admission that started it.
const podSecretReadTimeout = 10 * time.Second

// secrets reads kubernetes.io/dockerconfigjson Secrets; nil when no API server is reachable.
type secrets struct {
	client    kubernetes.Interface
	namespace string // pullgate's own: the only place policy-named credentials are read from

	reads singleflight.Group // one API call per pod pull secret at a time
	mu    sync.Mutex
	pods  map[string]podSecret // by namespace/name, read within podSecretTTL
	now   func() time.Time
}

// podSecret is one pod pull secret as read: a nil keychain for one that does not exist.
type podSecret struct {
	keychain authn.Keychain
	id       string
	expires  time.Time
}

// get returns a secret's docker config and an identity that changes when the secret does.
func (s *secrets) get(ctx context.Context, namespace, name string) ([]byte, string, error) {
	if s == nil || s.client == nil {
		return nil, "", errors.New("no API server to read the secret from")
	}
	sec, err := s.client.CoreV1().Secrets(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, "", fmt.Errorf("reading secret %s/%s: %w", namespace, name, err)
	}
	data, ok := sec.Data[corev1.DockerConfigJsonKey]
	if !ok {
		return nil, "", fmt.Errorf("secret %s/%s has no %s key", namespace, name, corev1.DockerConfigJsonKey)
	}
	return data, namespace + "/" + name + "@" + sec.ResourceVersion, nil
}

// own reads a Secret in pullgate's own namespace, the only place policy-named credentials live.
func (s *secrets) own(ctx context.Context, name string) ([]byte, string, error) {
	if s == nil {
		return nil, "", errors.New("no API server to read the secret from")
	}
	return s.get(ctx, s.namespace, name)
}

// resolverOptions translates the policy into the resolver's settings: TLS, plain HTTP and
// credentials per mirror and listed registry host, and the cache and fallback knobs.
func resolverOptions(ctx context.Context, pol *policy.Compiled, sec *secrets) (resolve.Options, error) {
	p := pol.Policy()
	opts := resolve.Options{
		CacheTTL: p.Resolve.CacheTTL.Duration,
		// The shared registry call outlives no admission: every caller waits at most this long.
		Timeout:            p.Resolve.Timeout.Duration,
		CacheSize:          *p.Resolve.CacheSize,
		MaxStale:           p.Resolve.MaxStale.Duration,
		FallbackToUpstream: p.Resolve.FallbackToUpstream,
		VerifyDigest:       p.Resolve.VerifyDigest,
		DigestMismatch:     resolve.MismatchPolicy(pol.DigestMismatch()),
		// A lookup that misses the admission budget goes on this long to fill the cache.
		BackgroundTimeout: p.Resolve.BackgroundTimeout.Duration,
		BackgroundLookups: *p.Resolve.BackgroundLookups,
		// Unlisted registries are chosen by pod authors: public addresses only, unless allowed.
		AllowPrivateUnlisted: p.Resolve.AllowPrivateUnlisted,
		Registries:           map[string]resolve.Registry{},
	}
	var errs []error
	add := func(kind, host string, conn policy.Connection) {
		key, reg, err := connection(ctx, host, conn, sec)
		if err != nil {
			// Keep what could be read: one unreadable secret must not stop every other registry.
			errs = append(errs, fmt.Errorf("%s %s: %w", kind, host, err))
		}
		if _, done := opts.Registries[key]; key != "" && !done {
			opts.Registries[key] = reg // mirrors on one host share settings (the policy checks)
		}
	}
	for _, m := range pol.Mirrors() {
		add("mirror", m.Host, m.Source.Connection)
		if key, err := name.NewRegistry(m.Host); err == nil && m.Source.PreservesDigests {
			if reg, ok := opts.Registries[key.RegistryStr()]; ok {
				reg.PreservesDigests = true
				opts.Registries[key.RegistryStr()] = reg
			}
		}
	}
	for _, r := range p.Registries {
		add("registry", r.Host, r.Connection)
	}
	if p.Resolve.UsePodPullSecrets && sec != nil && sec.client != nil {
		opts.PodSecrets = sec.podKeychain
	}
	return opts, errors.Join(errs...)
}

// connection reads a registry's TLS and credential settings. It returns the host as the
// resolver keys it (go-containerregistry's spelling: docker.io is index.docker.io).
func connection(ctx context.Context, hostname string, c policy.Connection, sec *secrets) (string, resolve.Registry, error) {
	var nameOpts []name.Option
	if c.Insecure {
		nameOpts = append(nameOpts, name.Insecure)
	}
	host, err := name.NewRegistry(hostname, nameOpts...)
	if err != nil {
		return "", resolve.Registry{}, err
	}
	reg := resolve.Registry{Insecure: c.Insecure, CABundle: []byte(c.CABundle)}
	var errs []error
	if c.CAFile != "" {
		if reg.CABundle, err = os.ReadFile(c.CAFile); err != nil {
			errs = append(errs, fmt.Errorf("reading caFile: %w", err))
		}
	}
	var creds []byte
	switch {
	case c.CredentialsSecret != "":
		creds, reg.CredentialID, err = sec.own(ctx, c.CredentialsSecret)
	case c.CredentialsFile != "":
		if creds, err = os.ReadFile(c.CredentialsFile); err == nil {
			sum := sha256.Sum256(creds)
			reg.CredentialID = "file:" + c.CredentialsFile + "@" + hex.EncodeToString(sum[:8])
		}
	}
	if err == nil && creds != nil {
		reg.Auth, err = resolve.AuthFromDockerConfigJSON(creds, host.RegistryStr())
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("credentials: %w", err))
	}
	return host.RegistryStr(), reg, errors.Join(errs...)
}

// podKeychain builds a keychain from a pod's pull secrets; its identity names the secrets and
// their versions so cached digests are never shared across different credentials. Like the
// kubelet, it skips secrets that do not exist rather than failing the pod's resolution.
func (s *secrets) podKeychain(ctx context.Context, namespace string, names []string) (authn.Keychain, string, error) {
	sorted := append([]string(nil), names...)
	sort.Strings(sorted)
	var chains []authn.Keychain
	ids := make([]string, 0, len(sorted))
	for _, n := range sorted {
		ps, err := s.podSecret(ctx, namespace, n)
		if err != nil {
			return nil, "", err
		}
		if ps.keychain != nil {
			chains = append(chains, ps.keychain)
		}
		ids = append(ids, ps.id)
	}
	return authn.NewMultiKeychain(chains...), strings.Join(ids, ","), nil
}

// podSecret returns a pod pull secret read within podSecretTTL, or reads it: one read at a
// time per secret, which every admission asking meanwhile waits for.
func (s *secrets) podSecret(ctx context.Context, namespace, name string) (podSecret, error) {
	key := namespace + "/" + name
	now := time.Now
	if s.now != nil {
		now = s.now
	}
	s.mu.Lock()
	ps, ok := s.pods[key]
	s.mu.Unlock()
	if ok && now().Before(ps.expires) {
		return ps, nil
	}
	ch := s.reads.DoChan(key, func() (any, error) {
		// Detached from the first caller's cancellation: the others wait for this read too.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), podSecretReadTimeout)
		defer cancel()
		ps, err := s.readPodSecret(ctx, namespace, name)
		if err != nil {
			return podSecret{}, err
		}
		ps.expires = now().Add(podSecretTTL)
		s.mu.Lock()
		if s.pods == nil || len(s.pods) >= maxPodSecrets {
			s.pods = map[string]podSecret{}
		}
		s.pods[key] = ps
		s.mu.Unlock()
		return ps, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return podSecret{}, res.Err
		}
		return res.Val.(podSecret), nil
	case <-ctx.Done():
		return podSecret{}, fmt.Errorf("reading secret %s: %w", key, ctx.Err())
	}
}

// readPodSecret asks the API server for one pod pull secret.
func (s *secrets) readPodSecret(ctx context.Context, namespace, name string) (podSecret, error) {
	data, id, err := s.get(ctx, namespace, name)
	if apierrors.IsNotFound(err) {
		return podSecret{id: namespace + "/" + name + "@missing"}, nil
	}
	if err != nil {
		return podSecret{}, err
	}
	kc, err := resolve.KeychainFromDockerConfigJSON(data)
	if err != nil {
		return podSecret{}, fmt.Errorf("secret %s/%s: %w", namespace, name, err)
	}
	return podSecret{keychain: kc, id: id}, nil
}
