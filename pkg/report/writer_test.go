package report

import (
	"errors"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
	openreports "github.com/openreports/reports-api/apis/openreports.io/v1alpha1"
	fakediscovery "k8s.io/client-go/discovery/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
)

// TestWriterNoAPILoggedOnce: with neither report API served, every Write fails with
// ErrNoReportAPI and the log says so once, not once a scan.
func TestWriterNoAPILoggedOnce(t *testing.T) {
	t.Parallel()
	var lines []string
	disc := kubefake.NewClientset().Discovery().(*fakediscovery.FakeDiscovery)
	w := &Writer{Discovery: disc, Log: funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{})}
	for range 3 {
		if _, err := w.Write(t.Context(), nil, openreports.ClusterReport{}); !errors.Is(err, ErrNoReportAPI) {
			t.Fatalf("Write: %v, want ErrNoReportAPI", err)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "Reports not written") {
		t.Errorf("log %q, want one 'Reports not written'", lines)
	}
}
