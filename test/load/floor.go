package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"time"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/pullgate/pullgate/internal/kjson"
)

// floorCommand is the argument that makes this binary serve the floor webhook instead of
// running the load test. The load test starts itself again with it, so the floor is a process
// of its own, like the webhook under test.
const floorCommand = "floor"

// maxBody matches controller-runtime's request size limit.
const maxBody = 7 << 20

// runFloor serves the trivial webhook: the same TLS as pullgate, one AdmissionReview decoded
// and every pod allowed unchanged. What it costs is what the machine, TLS, HTTP and JSON cost
// before any pullgate code runs.
func runFloor(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet(floorCommand, flag.ContinueOnError)
	certDir := fs.String("cert-dir", "", "directory with tls.crt and tls.key")
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	decoder := fs.String("decoder", "encoding/json", "how the review is decoded: encoding/json, or kjson (pullgate's decoder)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	decode, ok := floorDecoders[*decoder]
	if !ok {
		return fmt.Errorf("unknown -decoder %q", *decoder)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(*certDir, "tls.crt"), filepath.Join(*certDir, "tls.key"))
	if err != nil {
		return err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}}
	hardenTLS(cfg)
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	mux.HandleFunc("/mutate-v1-pod", floorHandler(decode))
	srv := &http.Server{Handler: mux, TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second}
	go func() { //nolint:gosec // G118: shutting down after ctx ended needs a context of its own
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	if err := srv.ServeTLS(l, "", ""); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// floorDecoders are the ways the floor decodes a review: the standard library, as a trivial
// webhook would, and pullgate's own decoder (internal/kjson), which is faster. The first is the
// floor the targets compare with; the second shows what pullgate costs beyond decoding alone.
var floorDecoders = map[string]func(io.Reader, *admissionv1.AdmissionReview) error{
	"encoding/json": func(r io.Reader, review *admissionv1.AdmissionReview) error {
		return json.NewDecoder(r).Decode(review)
	},
	"kjson": func(r io.Reader, review *admissionv1.AdmissionReview) error {
		body, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		return kjson.Unmarshal(body, review)
	},
}

func floorHandler(decode func(io.Reader, *admissionv1.AdmissionReview) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		if err := decode(io.LimitReader(r.Body, maxBody), &review); err != nil || review.Request == nil {
			http.Error(w, fmt.Sprintf("bad AdmissionReview: %v", err), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(admissionv1.AdmissionReview{
			TypeMeta: review.TypeMeta,
			Response: &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true},
		})
	}
}
