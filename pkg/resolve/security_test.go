package resolve_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/pullgate/pullgate/pkg/resolve"
)

// logBuffer collects every line a funcr logger writes, at any verbosity.
type logBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (b *logBuffer) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.lines = append(b.lines, prefix+" "+args)
	}, funcr.Options{Verbosity: 10})
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}

// echoingRegistry makes tr a registry with credentials that misbehaves: it does not answer HEAD
// for manifests (so the client GETs them and reads the error body), and answers manifest GETs
// with code and a body quoting the request's Authorization header and the password decoded
// from it. With bearer set, /v2/ asks for a token that token issues for the right basic
// credentials; the token endpoint quotes its Authorization header back when it refuses.
func echoingRegistry(tr *testRegistry, user, pass string, code int, bearer bool, token string) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		echo := func(code int) bool {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			_, p, _ := r.BasicAuth()
			msg := fmt.Sprintf("you sent %q, which is password %q", r.Header.Get("Authorization"), p)
			errCode := "UNKNOWN"
			if code == http.StatusUnauthorized || code == http.StatusForbidden {
				errCode = "UNAUTHORIZED"
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": errCode, "message": msg}}})
			return true
		}
		switch {
		case r.URL.Path == "/token":
			if u, p, ok := r.BasicAuth(); ok && u == user && p == pass && token != "" {
				_ = json.NewEncoder(w).Encode(map[string]string{"token": token})
				return true
			}
			return echo(http.StatusUnauthorized)
		case r.URL.Path == "/v2/" && r.Header.Get("Authorization") == "":
			if bearer {
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="test"`, tr.host))
			} else {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			}
			w.WriteHeader(http.StatusUnauthorized)
			return true
		case strings.Contains(r.URL.Path, "/manifests/") && r.Method == http.MethodHead:
			w.WriteHeader(http.StatusMethodNotAllowed)
			return true
		case strings.Contains(r.URL.Path, "/manifests/"):
			return echo(code)
		}
		return false
	}
}

// TestErrorsNeverQuoteCredentials: whatever a registry writes back, the resolver's errors (which
// become admission warnings every pod author reads) and its log lines never carry the
// credentials it used: not the password, not the basic Authorization value, not a bearer token
// obtained with them. The errors still classify as before.
func TestErrorsNeverQuoteCredentials(t *testing.T) {
	t.Parallel()
	const user, pass, token = "robot", "s3cr3t-ZXCV-9876", "tok-QWER-5432-secret"
	basic := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	forbidden := []string{pass, basic, strings.TrimRight(basic, "="), token}
	dockerConfig := fmt.Sprintf(`{"auths":{%%q:{"auth":%q}}}`, basic)

	cases := []struct {
		name   string
		code   int
		bearer bool
		token  string // issued by the token endpoint; "" refuses
		// keychain: credentials come from the pod's pull secrets rather than Registry.Auth.
		keychain bool
		want     error
	}{
		{name: "basic, 401", code: http.StatusUnauthorized, want: resolve.ErrUnauthorized},
		{name: "basic from pod pull secrets, 403", code: http.StatusForbidden, keychain: true, want: resolve.ErrUnauthorized},
		{name: "basic, 500 opens the circuit", code: http.StatusInternalServerError, want: resolve.ErrRegistry},
		{name: "bearer token, 401", code: http.StatusUnauthorized, bearer: true, token: token, want: resolve.ErrUnauthorized},
		{name: "token endpoint refuses", code: http.StatusUnauthorized, bearer: true, want: resolve.ErrUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tr := newRegistry(t)
			tr.push(t, "app:1")
			tr.setFault(echoingRegistry(tr, user, pass, tc.code, tc.bearer, tc.token))
			opts := resolve.Options{BreakerFailures: 1, Registries: map[string]resolve.Registry{tr.host: {Insecure: true, Auth: basicAuth(user, pass)}}}
			if tc.keychain {
				kc, err := resolve.KeychainFromDockerConfigJSON([]byte(fmt.Sprintf(dockerConfig, tr.host)))
				if err != nil {
					t.Fatal(err)
				}
				opts.Registries = map[string]resolve.Registry{tr.host: {Insecure: true}}
				opts.PodSecrets = func(context.Context, string, []string) (authn.Keychain, string, error) { return kc, "ns/s@1", nil }
			}
			r := newResolver(t, newClock(), opts, tr)
			var logs logBuffer
			ctx := logr.NewContext(context.Background(), logs.logger())
			req := request(tr.ref(t, "app:1"))
			if tc.keychain {
				req.Namespace, req.PullSecrets = "ns", []string{"s"}
			}
			_, err := r.Resolve(ctx, req)
			if err == nil {
				t.Fatal("resolved through a registry that refuses")
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("error %v, want it to wrap %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), "[redacted]") {
				t.Errorf("the registry's answer should have been quoted with the credentials hidden: %v", err)
			}
			// A second call finds the circuit open (500) and logs nothing new with the answer;
			// the first call's log line about opening the circuit carries the error.
			_, _ = r.Resolve(ctx, request(tr.ref(t, "app:1")))
			if tc.code == http.StatusInternalServerError && !strings.Contains(logs.String(), "circuit opened") {
				t.Errorf("want the circuit-opened log line, which carries the error; log:\n%s", logs.String())
			}
			for where, text := range map[string]string{"error": err.Error(), "log": logs.String()} {
				for _, f := range forbidden {
					if strings.Contains(text, f) {
						t.Errorf("%s carries the credentials (%q): %s", where, f, text)
					}
				}
			}
		})
	}
}

// TestRedactionKeepsAuthWorking: the same registry with the right credentials resolves, so
// hiding credentials in errors does not touch what is sent.
func TestRedactionKeepsAuthWorking(t *testing.T) {
	t.Parallel()
	const user, pass = "robot", "s3cr3t-ZXCV-9876"
	for _, bearer := range []bool{false, true} {
		t.Run(fmt.Sprintf("bearer=%v", bearer), func(t *testing.T) {
			t.Parallel()
			tr := newRegistry(t)
			digest := tr.push(t, "app:1")
			fault := echoingRegistry(tr, user, pass, http.StatusUnauthorized, bearer, "tok-1234567890")
			tr.setFault(func(w http.ResponseWriter, r *http.Request) bool {
				// Past the challenge and token exchange, answer manifests as a registry would.
				if strings.Contains(r.URL.Path, "/manifests/") {
					if u, p, ok := r.BasicAuth(); (ok && u == user && p == pass) || r.Header.Get("Authorization") == "Bearer tok-1234567890" {
						return false
					}
				}
				return fault(w, r)
			})
			r := newResolver(t, newClock(), resolve.Options{Registries: map[string]resolve.Registry{tr.host: {Insecure: true, Auth: basicAuth(user, pass)}}}, tr)
			res, err := r.Resolve(context.Background(), request(tr.ref(t, "app:1")))
			if err != nil || res.Digest != digest {
				t.Fatalf("Resolve = %v, %v; want %s", res, err, digest)
			}
		})
	}
}
