package resolve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// PodSecrets reads a pod's imagePullSecrets. It returns a keychain over them and a stable,
// non-secret identity for the set (for example a hash of namespace, names and
// resourceVersions): results resolved with those credentials are cached under it, so one
// tenant's private answer never serves another. It is called on every Resolve that carries pull
// secrets, cache hits included, so it must not ask the API server each time: the webhook's
// keeps each secret for a short TTL and reads it once however many admissions wait for it.
type PodSecrets func(ctx context.Context, namespace string, names []string) (authn.Keychain, string, error)

// KeychainFromDockerConfigJSON parses the contents of a kubernetes.io/dockerconfigjson Secret
// (or a mounted ~/.docker/config.json); the legacy kubernetes.io/dockercfg form, a bare map of
// registries, is accepted too. Keys match the way the kubelet matches them: by host, with
// docker.io's aliases folded together, a leading "*." wildcard for one DNS label, and an
// optional path prefix (the longest matching one wins). Errors never quote the input.
func KeychainFromDockerConfigJSON(data []byte) (authn.Keychain, error) {
	var doc struct {
		Auths map[string]authn.AuthConfig `json:"auths"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, configError(err)
	}
	if doc.Auths == nil {
		// Legacy .dockercfg: the registries are the top-level keys.
		if err := json.Unmarshal(data, &doc.Auths); err != nil {
			return nil, configError(err)
		}
	}
	kc := make(dockerKeychain, 0, len(doc.Auths))
	for key, cfg := range doc.Auths {
		m, err := parseConfigKey(key)
		if err != nil {
			return nil, err
		}
		m.auth = authn.FromConfig(cfg)
		kc = append(kc, m)
	}
	return kc, nil
}

// AuthFromDockerConfigJSON returns the credentials a docker config holds for one registry host
// (as name.Registry.RegistryStr() spells it), for Registry.Auth. It fails when there are none,
// since a mirror given a credentials secret that does not cover it is a configuration mistake.
func AuthFromDockerConfigJSON(data []byte, host string) (authn.Authenticator, error) {
	kc, err := KeychainFromDockerConfigJSON(data)
	if err != nil {
		return nil, err
	}
	reg, err := name.NewRegistry(host)
	if err != nil {
		return nil, fmt.Errorf("registry %q: %w", host, err)
	}
	auth, err := kc.Resolve(reg)
	if err != nil {
		return nil, err
	}
	if auth == authn.Anonymous {
		return nil, fmt.Errorf("docker config has no credentials for %s", reg.RegistryStr())
	}
	return auth, nil
}

func configError(err error) error {
	var serr *json.SyntaxError
	if errors.As(err, &serr) {
		return fmt.Errorf("docker config: malformed JSON at byte %d", serr.Offset)
	}
	var terr *json.UnmarshalTypeError
	if errors.As(err, &terr) {
		return fmt.Errorf("docker config: field %q has the wrong type", terr.Field)
	}
	// AuthConfig's own errors say which field failed to decode, not what it held.
	return fmt.Errorf("docker config: %w", err)
}

type configMatch struct {
	host   string // normalized; may start with "*."
	prefix string // repository path prefix, "" for the whole registry
	auth   authn.Authenticator
}

type dockerKeychain []configMatch

var _ authn.Keychain = dockerKeychain(nil)

func (kc dockerKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	host := target.RegistryStr()
	repo := ""
	if r, ok := target.(name.Repository); ok {
		repo = r.RepositoryStr()
	}
	var best *configMatch
	for i := range kc {
		m := &kc[i]
		if !hostMatches(m.host, host) {
			continue
		}
		if m.prefix != "" && repo != m.prefix && !strings.HasPrefix(repo, m.prefix+"/") {
			continue
		}
		if best == nil || len(m.prefix) > len(best.prefix) || (len(m.prefix) == len(best.prefix) && !strings.HasPrefix(m.host, "*.")) {
			best = m
		}
	}
	if best == nil {
		return authn.Anonymous, nil
	}
	return best.auth, nil
}

func hostMatches(pattern, host string) bool {
	if !strings.HasPrefix(pattern, "*.") {
		return pattern == host
	}
	ok, err := path.Match(strings.ReplaceAll(pattern, ".", "/"), strings.ReplaceAll(host, ".", "/"))
	return err == nil && ok
}

// parseConfigKey reads a docker config key: "host", "host:port", "https://host/v1/",
// "host/team" and so on.
func parseConfigKey(key string) (configMatch, error) {
	k := strings.TrimSpace(key)
	if !strings.Contains(k, "://") {
		k = "https://" + k
	}
	u, err := url.Parse(k)
	if err != nil || u.Host == "" {
		return configMatch{}, fmt.Errorf("docker config: registry key %q is not a host", key)
	}
	host := strings.ToLower(u.Host)
	switch host {
	case "docker.io", "registry-1.docker.io", "index.docker.io":
		host = name.DefaultRegistry
	}
	prefix := strings.Trim(u.Path, "/")
	if host == name.DefaultRegistry && (prefix == "v1" || prefix == "v2") {
		// "https://index.docker.io/v1/" names the registry, not a repository.
		prefix = ""
	}
	return configMatch{host: host, prefix: prefix}, nil
}
