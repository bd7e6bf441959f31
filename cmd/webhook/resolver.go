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
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/pullgate/pullgate/pkg/policy"
	"github.com/pullgate/pullgate/pkg/resolve"
)

// podSecretTTL bounds how long a pod's pull-secret keychain is reused. Resolution runs on every
// admission, cache hits included, so reading the secrets each time would put one API call per
// secret on the admission path; a rotated secret is picked up within this time.
const podSecretTTL = 30 * time.Second

// secrets reads kubernetes.io/dockerconfigjson Secrets; nil when no API server is reachable.
type secrets struct {
	client    kubernetes.Interface
	namespace string // pullgate's own: the only place policy-named credentials are read from

	mu   sync.Mutex
	pods map[string]podKeys // by namespace and sorted secret names
	now  func() time.Time
}

type podKeys struct {
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
	key := namespace + "/" + strings.Join(sorted, ",")
	now := time.Now
	if s.now != nil {
		now = s.now
	}
	s.mu.Lock()
	if e, ok := s.pods[key]; ok && now().Before(e.expires) {
		s.mu.Unlock()
		return e.keychain, e.id, nil
	}
	s.mu.Unlock()

	var chains []authn.Keychain
	ids := make([]string, 0, len(sorted))
	for _, n := range sorted {
		data, id, err := s.get(ctx, namespace, n)
		if apierrors.IsNotFound(err) {
			ids = append(ids, namespace+"/"+n+"@missing")
			continue
		}
		if err != nil {
			return nil, "", err
		}
		kc, err := resolve.KeychainFromDockerConfigJSON(data)
		if err != nil {
			return nil, "", fmt.Errorf("secret %s/%s: %w", namespace, n, err)
		}
		chains = append(chains, kc)
		ids = append(ids, id)
	}
	e := podKeys{keychain: authn.NewMultiKeychain(chains...), id: strings.Join(ids, ","), expires: now().Add(podSecretTTL)}
	s.mu.Lock()
	if s.pods == nil || len(s.pods) > 10000 {
		s.pods = map[string]podKeys{} // bounded: dropping all is cheap, the next admissions refill it
	}
	s.pods[key] = e
	s.mu.Unlock()
	return e.keychain, e.id, nil
}
