package admissionhttp

import (
	"io"
	"testing"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// mutatePath is where serve registers the pod webhook; tests send there for realism only.
const mutatePath = "/mutate-v1-pod"

// offlinePolicy rewrites Docker Hub images to a mirror, without resolving.
const offlinePolicy = `apiVersion: pullgate.dev/v1alpha1
kind: Policy
mirrors: [{registry: docker.io, mirror: mirror.example.com/hub}]
resolve: {enabled: false}
imagePullSecrets: [mirror-pull]
`

// testLogger writes JSON lines, as serve's logger does.
func testLogger(w io.Writer) logr.Logger { return zap.New(zap.WriteTo(w), zap.UseDevMode(false)) }

// reviewJSON is a review of the load test's pod, which the offline policy patches.
func reviewJSON(testing.TB) []byte { return reviewOf("CREATE", "apps", loadPod, "") }
