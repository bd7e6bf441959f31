package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	"sigs.k8s.io/yaml"
)

// selfSigned writes tls.crt and tls.key for 127.0.0.1 into dir and returns a pool trusting it.
func selfSigned(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pullgate-test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return pool
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

type server struct {
	url, health, metrics string
	client               *http.Client
	pool                 *x509.CertPool
	stderr               *syncBuffer
}

// startServe runs `webhook serve` in-process and waits until /readyz says ready.
func startServe(t *testing.T, policyPath string) *server {
	t.Helper()
	certDir := t.TempDir()
	pool := selfSigned(t, certDir)
	port, hp, mp := freePort(t), freePort(t), freePort(t)
	s := &server{
		url:     fmt.Sprintf("https://127.0.0.1:%d%s", port, MutatePath),
		health:  fmt.Sprintf("http://127.0.0.1:%d", hp),
		metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", mp),
		client:  &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
		pool:    pool,
		stderr:  &syncBuffer{},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--policy", policyPath, "--cert-dir", certDir, "--bind-address", "127.0.0.1",
			"--port", fmt.Sprint(port), "--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", hp),
			"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", mp), "--namespace", "pullgate", "-v", "1"}, nil, io.Discard, s.stderr)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve returned %v", err)
		}
		if t.Failed() {
			t.Logf("serve log:\n%s", s.stderr.String())
		}
	})
	eventually(t, 15*time.Second, func() error {
		select {
		case err := <-done:
			t.Fatalf("serve exited early: %v\n%s", err, s.stderr.String())
		default:
		}
		resp, err := http.Get(s.health + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
	return s
}

// eventually polls f until it succeeds or the deadline passes.
func eventually(t *testing.T, within time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// post sends a raw body and decodes the AdmissionReview answer.
func (s *server) post(t *testing.T, body []byte) (*admissionv1.AdmissionResponse, int) {
	t.Helper()
	resp, err := s.client.Post(s.url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&review); err != nil {
		t.Fatalf("HTTP %d, undecodable answer: %v", resp.StatusCode, err)
	}
	if review.Response == nil {
		t.Fatalf("HTTP %d, no response", resp.StatusCode)
	}
	return review.Response, resp.StatusCode
}

func reviewJSON(t testing.TB) []byte {
	t.Helper()
	j, err := yaml.YAMLToJSON([]byte(reviewYAML))
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func patchValues(t *testing.T, r *admissionv1.AdmissionResponse) string {
	t.Helper()
	var ops []struct {
		Value any `json:"value"`
	}
	if err := json.Unmarshal(r.Patch, &ops); err != nil {
		t.Fatalf("patch %q: %v", r.Patch, err)
	}
	var vals []string
	for _, o := range ops {
		vals = append(vals, fmt.Sprint(o.Value))
	}
	return strings.Join(vals, " ")
}

func TestServeHTTPSAndHotReload(t *testing.T) {
	policyPath := writeFile(t, "policy.yaml", offlinePolicy)
	s := startServe(t, policyPath)

	r, code := s.post(t, reviewJSON(t))
	if code != http.StatusOK || !r.Allowed || r.UID != "0b5a2f4e-1111-2222-3333-444455556666" || !strings.Contains(patchValues(t, r), "mirror.example.com/hub/library/nginx:1.27@sha256:") {
		t.Fatalf("code %d response %+v patch %s", code, r, r.Patch)
	}

	// A broken policy is rejected; the last good one keeps answering.
	if err := os.WriteFile(policyPath, []byte("apiVersion: pullgate.dev/v1alpha1\nkind: Policy\nmode: Sometimes\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		if !strings.Contains(s.stderr.String(), "Rejected new policy") {
			return fmt.Errorf("rejection not logged yet")
		}
		return nil
	})
	if r, _ := s.post(t, reviewJSON(t)); !strings.Contains(patchValues(t, r), "mirror.example.com/hub/") {
		t.Fatalf("bad policy replaced the good one: %s", r.Patch)
	}

	// A good new policy is picked up without a restart.
	next := strings.Replace(offlinePolicy, "mirror.example.com/hub", "mirror2.example.com/dockerhub", 1)
	if err := os.WriteFile(policyPath, []byte(next), 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		r, _ := s.post(t, reviewJSON(t))
		if v := patchValues(t, r); !strings.Contains(v, "mirror2.example.com/dockerhub/library/nginx") {
			return fmt.Errorf("still %s", v)
		}
		return nil
	})

	// Metrics: controller-runtime's webhook metrics and ours, on one endpoint.
	body := fetch(t, s.metrics)
	for _, m := range []string{"controller_runtime_webhook_requests_total", `pullgate_mutations_total{action="rewrite",mode="enforce"}`} {
		if !strings.Contains(body, m) {
			t.Errorf("metrics lack %s", m)
		}
	}
}

func TestServeTLSHardening(t *testing.T) {
	s := startServe(t, writeFile(t, "policy.yaml", offlinePolicy))
	addr := strings.TrimPrefix(strings.Split(s.url, MutatePath)[0], "https://")

	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: s.pool, NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if p := conn.ConnectionState().NegotiatedProtocol; p == "h2" {
		t.Errorf("HTTP/2 negotiated")
	}
	conn.Close()

	if c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: s.pool, MaxVersion: tls.VersionTLS11}); err == nil {
		c.Close()
		t.Error("TLS 1.1 accepted")
	}
}

func TestServeBadRequests(t *testing.T) {
	s := startServe(t, writeFile(t, "policy.yaml", offlinePolicy))
	good := reviewJSON(t)
	cases := []struct {
		name string
		body []byte
	}{
		{"malformed", []byte("{not json")},
		{"empty", nil},
		{"not a pod", bytes.Replace(good, []byte(`"kind":"Pod","metadata"`), []byte(`"kind":"ConfigMap","metadata"`), 1)},
		{"object null", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","kind":{"version":"v1","kind":"Pod"},"resource":{"version":"v1","resource":"pods"},"operation":"CREATE","object":null}}`)},
		{"10MB", append(append([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x","object":{"metadata":{"name":"`), bytes.Repeat([]byte("a"), 10<<20)...), []byte(`"}}}}`)...)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := s.post(t, tc.body)
			if r.Allowed || r.Result == nil || r.Result.Code < 400 || len(r.Patch) != 0 {
				t.Errorf("want an error response, got allowed=%v result=%+v", r.Allowed, r.Result)
			}
		})
	}
	// The server is still healthy and answering.
	if r, _ := s.post(t, good); !r.Allowed {
		t.Fatalf("good request after bad ones: %+v", r.Result)
	}
}

// TestServeAdmissionInstrumented: serve registers admissionhttp.Webhook on controller-runtime's server,
// which still counts and times each request for the path, and the request's logger reaches the
// handler's log lines.
func TestServeAdmissionInstrumented(t *testing.T) {
	t.Parallel()
	s := startServe(t, writeFile(t, "policy.yaml", offlinePolicy))
	series := []string{
		`controller_runtime_webhook_requests_total{code="200",webhook="/mutate-v1-pod"}`,
		`controller_runtime_webhook_latency_seconds_count{webhook="/mutate-v1-pod"}`,
	}
	before := scrape(t, s.metrics, series)
	if r, _ := s.post(t, reviewJSON(t)); !r.Allowed || len(r.Patch) == 0 {
		t.Fatalf("not patched: %+v", r.Result)
	}
	after := scrape(t, s.metrics, series)
	for _, name := range series {
		if after[name] < before[name]+1 {
			t.Errorf("%s went from %v to %v", name, before[name], after[name])
		}
	}
	if _, ok := after[`controller_runtime_webhook_requests_in_flight{webhook="/mutate-v1-pod"}`]; !ok {
		if !strings.Contains(fetch(t, s.metrics), `controller_runtime_webhook_requests_in_flight{webhook="/mutate-v1-pod"}`) {
			t.Error("no in-flight gauge for the path")
		}
	}
	// serve runs at -v 1: the handler's decision carries the request's identity.
	eventually(t, 5*time.Second, func() error {
		if !regexp.MustCompile(`"msg":"Decided".*"requestID":"0b5a2f4e-1111-2222-3333-444455556666","kind":"Pod","namespace":"apps","name":"","operation":"CREATE","user":""`).MatchString(s.stderr.String()) {
			return errors.New("no Decided line with the request's identity")
		}
		return nil
	})
}

func fetch(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// scrape reads the named series (name{labels} as exposed) from a /metrics page.
func scrape(t *testing.T, url string, names []string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, line := range strings.Split(fetch(t, url), "\n") {
		for _, n := range names {
			if v, ok := strings.CutPrefix(line, n+" "); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("%s: %v", line, err)
				}
				out[n] = f
			}
		}
	}
	return out
}
