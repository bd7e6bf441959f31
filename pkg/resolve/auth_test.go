package resolve_test

import (
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/pullgate/pullgate/pkg/resolve"
)

func TestKeychainFromDockerConfigJSON(t *testing.T) {
	t.Parallel()
	const config = `{"auths":{
		"https://index.docker.io/v1/": {"auth": "aHViOmh1Yi1wYXNz"},
		"registry.example:5000":       {"username": "plain", "password": "plain-pass"},
		"registry.example:5000/team":  {"username": "team", "password": "team-pass"},
		"*.corp.example":              {"username": "wild", "password": "wild-pass"},
		"http://insecure.example":     {"username": "http", "password": "http-pass"}
	}}`
	kc, err := resolve.KeychainFromDockerConfigJSON([]byte(config))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		repo     string
		wantUser string // "" for anonymous
	}{
		{"nginx", "hub"},
		{"docker.io/library/nginx", "hub"},
		{"registry.example:5000/app", "plain"},
		{"registry.example:5000/team/app", "team"},
		{"registry.example:5000/teamster/app", "plain"},
		{"registry.example/app", ""},
		{"a.corp.example/app", "wild"},
		{"a.b.corp.example/app", ""},
		{"insecure.example/app", "http"},
		{"quay.io/app", ""},
	}
	for _, tt := range tests {
		t.Run(tt.repo, func(t *testing.T) {
			t.Parallel()
			repo, err := name.NewRepository(tt.repo)
			if err != nil {
				t.Fatal(err)
			}
			auth, err := kc.Resolve(repo)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := auth.Authorization()
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Username != tt.wantUser {
				t.Errorf("user %q, want %q", cfg.Username, tt.wantUser)
			}
		})
	}
}

func TestDockerConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, config, want string
	}{
		{"not JSON", `{"auths": {"r.example": {"password": "hunter2-secret"`, "malformed JSON"},
		{"wrong type", `{"auths": {"r.example": {"password": ["hunter2-secret"]}}}`, "wrong type"},
		{"bad auth field", `{"auths": {"r.example": {"auth": "!!hunter2-secret!!"}}}`, "auth field"},
		{"legacy dockercfg", `{"r.example": {"auth": "dTpw"}}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := resolve.KeychainFromDockerConfigJSON([]byte(tt.config))
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q quotes the secret", err)
			}
		})
	}
}

func TestAuthFromDockerConfigJSON(t *testing.T) {
	t.Parallel()
	config := []byte(`{"auths":{"mirror.example:5000":{"username":"robot","password":"robot-pass"}}}`)
	auth, err := resolve.AuthFromDockerConfigJSON(config, "mirror.example:5000")
	if err != nil {
		t.Fatal(err)
	}
	if cfg, err := auth.Authorization(); err != nil || cfg.Username != "robot" {
		t.Errorf("Authorization() = %+v, %v; want robot", cfg, err)
	}
	if _, err := resolve.AuthFromDockerConfigJSON(config, "other.example"); err == nil {
		t.Error("no error for a host the config does not cover")
	}
}
