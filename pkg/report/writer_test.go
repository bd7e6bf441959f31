package report

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	openreports "github.com/openreports/reports-api/apis/openreports.io/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	fakediscovery "k8s.io/client-go/discovery/fake"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/pullgate/pullgate/pkg/policy"
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

type staticPolicy struct{ pol *policy.Compiled }

func (s staticPolicy) Current() *policy.Compiled { return s.pol }

// TestControllerForbidden: RBAC denies the report API. Every scan fails with the API server's
// words in the log, the controller keeps its schedule and stops only with its context: no crash
// loop.
func TestControllerForbidden(t *testing.T) {
	t.Parallel()
	disc := kubefake.NewClientset().Discovery().(*fakediscovery.FakeDiscovery)
	disc.Resources = []*metav1.APIResourceList{{GroupVersion: APIOpenReports}}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		{Group: "openreports.io", Version: "v1alpha1", Resource: "reports"}: "ReportList",
	})
	dyn.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "openreports.io", Resource: "reports"}, "", errors.New("RBAC: access denied"))
	})
	var mu sync.Mutex
	var lines []string
	log := funcr.New(func(_, args string) { mu.Lock(); lines = append(lines, args); mu.Unlock() }, funcr.Options{})
	scans := make(chan error, 10)
	c := &Controller{
		Kube:     kubefake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}}, newPod("apps", "web", "nginx")),
		Writer:   &Writer{Dynamic: dyn, Discovery: disc, Log: log},
		Policy:   staticPolicy{compile(t)},
		Interval: 50 * time.Millisecond,
		Log:      log,
		Scanned:  func(_ Stats, _ *Findings, _ time.Duration, err error) { scans <- err },
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Start(ctx) }()
	for range 3 {
		if err := <-scans; !apierrors.IsForbidden(err) {
			t.Fatalf("scan error %v, want forbidden", err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Start returned %v after its context ended, want nil", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lines) == 0 || !strings.Contains(strings.Join(lines, "\n"), "forbidden") {
		t.Errorf("log does not say the API server forbade it: %q", lines)
	}
}
