package main

import (
	"context"
	"encoding/base64"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/pullgate/pullgate/pkg/policy"
)

func dockerSecret(ns, name, host, user, pass string) *corev1.Secret {
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "7"},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"` + host + `":{"auth":"` + auth + `"}}}`)},
	}
}

// TestPodKeychainCachesAndSkipsMissing: the admission path must not read secrets from the API
// server on every pod, and a pod naming a secret that does not exist still resolves with the
// others, as the kubelet pulls with them.
func TestPodKeychainCachesAndSkipsMissing(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(dockerSecret("apps", "a", "registry.example.com", "u", "p"))
	gets := 0
	client.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		gets++
		return false, nil, nil
	})
	now := time.Unix(1000, 0)
	s := &secrets{client: client, now: func() time.Time { return now }}
	ctx := context.Background()

	kc, id, err := s.podKeychain(ctx, "apps", []string{"missing", "a"})
	if err != nil {
		t.Fatal(err)
	}
	if id != "apps/a@7,apps/missing@missing" {
		t.Errorf("identity %q", id)
	}
	reg, _ := name.NewRegistry("registry.example.com")
	auth, err := kc.Resolve(reg)
	if err != nil {
		t.Fatal(err)
	}
	if cfg, _ := auth.Authorization(); cfg == nil || cfg.Username != "u" {
		t.Errorf("credentials from secret a not used: %+v", cfg)
	}
	if _, _, err := s.podKeychain(ctx, "apps", []string{"a", "missing"}); err != nil || gets != 2 {
		t.Errorf("second lookup within the TTL read the API server again: %d gets, err %v", gets, err)
	}
	now = now.Add(podSecretTTL + time.Second)
	if _, _, err := s.podKeychain(ctx, "apps", []string{"a", "missing"}); err != nil || gets != 4 {
		t.Errorf("after the TTL: %d gets, err %v", gets, err)
	}
	if kc == authn.DefaultKeychain {
		t.Error("must not fall back to the process's own credentials")
	}
}

// TestResolverOptionsCredentials: a policy-named secret is read from pullgate's own namespace
// only, and its identity (not its content) keys the cache.
func TestResolverOptionsCredentials(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(
		dockerSecret("pullgate", "robot", "harbor.example.com", "robot", "pw"),
		dockerSecret("apps", "robot", "harbor.example.com", "evil", "pw2"),
	)
	pol, err := policy.Check([]byte(`apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors: [{registry: docker.io, mirror: harbor.example.com/hub, credentialsSecret: robot}, {registry: quay.io, mirror: harbor.example.com/quay, credentialsSecret: robot}, {registry: ghcr.io, mirror: other.example.com/ghcr, credentialsSecret: absent}]
`))
	if err != nil {
		t.Fatal(err)
	}
	opts, err := resolverOptions(context.Background(), pol, &secrets{client: client, namespace: "pullgate"})
	if err == nil || !strings.Contains(err.Error(), "absent") {
		t.Errorf("missing secret not reported: %v", err)
	}
	reg := opts.Registries["harbor.example.com"]
	if reg.Auth == nil || reg.CredentialID != "pullgate/robot@7" {
		t.Fatalf("registry settings %+v", reg)
	}
	cfg, err := reg.Auth.Authorization()
	if err != nil || cfg.Username != "robot" {
		t.Errorf("wrong credentials: %+v %v", cfg, err)
	}
	if strings.Contains(err2s(err), "pw") {
		t.Error("error reveals a password")
	}
}

func err2s(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestPodKeychainBurst: a scale-up admits many pods with the same pull secrets at once; each
// secret is read from the API server once, not once per pod.
func TestPodKeychainBurst(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset(
		dockerSecret("apps", "a", "registry.example.com", "u", "p"),
		dockerSecret("apps", "b", "other.example.com", "u", "p"),
	)
	var gets atomic.Int64
	client.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		gets.Add(1)
		time.Sleep(20 * time.Millisecond) // an API server's round trip: the burst overlaps it
		return false, nil, nil
	})
	s := &secrets{client: client}
	const pods = 100
	var wg sync.WaitGroup
	ids := make(chan string, pods)
	for range pods {
		wg.Go(func() {
			_, id, err := s.podKeychain(t.Context(), "apps", []string{"b", "a", "missing"})
			if err != nil {
				t.Error(err)
			}
			ids <- id
		})
	}
	wg.Wait()
	close(ids)
	for id := range ids {
		if id != "apps/a@7,apps/b@7,apps/missing@missing" {
			t.Fatalf("identity %q", id)
		}
	}
	if n := gets.Load(); n != 3 {
		t.Errorf("%d pods with 3 pull secrets cost %d GETs, want 3", pods, n)
	}
}
