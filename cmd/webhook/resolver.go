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

// resolverOptions translates the policy into the resolver's settings: TLS, plain HTTP and
// credentials per mirror host, and the cache and fallback knobs.
func resolverOptions(ctx context.Context, pol *policy.Compiled, sec *secrets) (resolve.Options, error) {
	p := pol.Policy()
	opts := resolve.Options{
		CacheTTL: p.Resolve.CacheTTL.Duration,
		// The shared registry call outlives no admission: every caller waits at most this long.
		Timeout:            p.Resolve.Timeout.Duration,
		CacheSize:          *p.Resolve.CacheSize,
		MaxStale:           p.Resolve.MaxStale.Duration,
		NoStale:            p.Resolve.MaxStale.Duration == 0,
		FallbackToUpstream: p.Resolve.FallbackToUpstream,
		Registries:         map[string]resolve.Registry{},
	}
	var errs []error
	for _, m := range pol.Mirrors() {
		var nameOpts []name.Option
		if m.Insecure {
			nameOpts = append(nameOpts, name.Insecure)
		}
		host, err := name.NewRegistry(m.Host, nameOpts...)
		if err != nil {
			errs = append(errs, fmt.Errorf("mirror %s: %w", m.Host, err))
			continue
		}
		if _, done := opts.Registries[host.RegistryStr()]; done {
			continue // another mirror on this host; the policy guarantees equal settings
		}
		reg := resolve.Registry{Insecure: m.Insecure, CABundle: []byte(m.Source.CABundle)}
		if m.Source.CAFile != "" {
			if reg.CABundle, err = os.ReadFile(m.Source.CAFile); err != nil {
				errs = append(errs, fmt.Errorf("mirror %s: reading caFile: %w", m.Host, err))
			}
		}
		var creds []byte
		switch {
		case m.Source.CredentialsSecret != "":
			creds, reg.CredentialID, err = sec.get(ctx, sec.namespace, m.Source.CredentialsSecret)
		case m.Source.CredentialsFile != "":
			if creds, err = os.ReadFile(m.Source.CredentialsFile); err == nil {
				sum := sha256.Sum256(creds)
				reg.CredentialID = "file:" + m.Source.CredentialsFile + "@" + hex.EncodeToString(sum[:8])
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("mirror %s credentials: %w", m.Host, err))
		} else if creds != nil {
			if reg.Auth, err = resolve.AuthFromDockerConfigJSON(creds, host.RegistryStr()); err != nil {
				errs = append(errs, fmt.Errorf("mirror %s credentials: %w", m.Host, err))
			}
		}
		opts.Registries[host.RegistryStr()] = reg
	}
	if p.Resolve.UsePodPullSecrets && sec != nil && sec.client != nil {
		opts.PodSecrets = sec.podKeychain
	}
	return opts, errors.Join(errs...)
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
