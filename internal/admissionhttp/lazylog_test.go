package admissionhttp

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

func TestLazyValuesReachTheLine(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l := withLazyValues(testLogger(&buf).WithName("admission"), "requestID", "r-1", "namespace", "apps")
	l = l.WithValues("extra", 7).WithName("handler")
	l.V(1).Info("not written at verbosity 0")
	l.Info("decided", "changes", 2)
	l.Error(errors.New("boom"), "failed")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), buf.String())
	}
	for _, want := range []string{`"logger":"admission.handler"`, `"requestID":"r-1"`, `"namespace":"apps"`, `"extra":7`} {
		for _, line := range lines {
			if !strings.Contains(line, want) {
				t.Errorf("line lacks %s: %s", want, line)
			}
		}
	}
	if !strings.Contains(lines[0], `"changes":2`) || !strings.Contains(lines[1], `"error":"boom"`) {
		t.Errorf("the call's own values are missing:\n%s", buf.String())
	}
}

func TestLazyValuesKeepTheCaller(t *testing.T) {
	t.Parallel()
	var caller string
	base := funcr.New(func(_, args string) { caller = args }, funcr.Options{LogCaller: funcr.All})
	l := withLazyValues(base, "requestID", "r-1")
	l.Info("here")
	if !strings.Contains(caller, "lazylog_test.go") {
		t.Errorf("caller attributed to %s, want this test file", caller)
	}
	logr.FromContextOrDiscard(logr.NewContext(t.Context(), l.WithValues("a", 1))).Error(nil, "there")
	if !strings.Contains(caller, "lazylog_test.go") || !strings.Contains(caller, `"a"=1`) && !strings.Contains(caller, `"a":1`) {
		t.Errorf("caller or value lost through the context: %s", caller)
	}
}

func TestLazyValuesWithoutSink(t *testing.T) {
	t.Parallel()
	withLazyValues(logr.Discard(), "k", "v").Info("nothing happens")
}
