//go:build e2e

package e2e_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/pullgate/pullgate/test/certmanager"
	"github.com/pullgate/pullgate/test/chart"
	"github.com/pullgate/pullgate/test/e2e"
)

// TestChart installs what the Helm chart renders on the real API server, with cert-manager's
// real controllers and cainjector issuing and injecting the certificate, and runs the webhook as
// the chart's ServiceAccount on that certificate. There are no nodes, so the Deployment never
// runs: the binary stands in for its pod, and the webhook configuration calls it by URL instead
// of through the Service (the certificate gets 127.0.0.1 for that, via
// certManager.serving.ipAddresses). Everything else is the chart's objects as rendered.
func TestChart(t *testing.T) {
	ctx := t.Context()
	s := e2e.NewScope(t)
	dir := env.TestDir(t)
	startCertManager(t, filepath.Join(dir, "cert-manager.log"))

	ns := env.Namespace(t, s, "")
	enforced := env.Namespace(t, s, "enforce")
	plain := env.Namespace(t, s, "")

	// The chart's values: the suite's default policy, and 127.0.0.1 in the serving certificate.
	pol, err := json.Marshal(env.DefaultPolicy())
	if err != nil {
		t.Fatal(err)
	}
	policy := map[string]any{}
	if err := json.Unmarshal(pol, &policy); err != nil {
		t.Fatal(err)
	}
	delete(policy, "apiVersion")
	delete(policy, "kind")
	values, err := yaml.Marshal(map[string]any{
		"policy":      policy,
		"certManager": map[string]any{"serving": map[string]any{"ipAddresses": []string{"127.0.0.1"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	valuesFile := filepath.Join(dir, "values.yaml")
	if err := os.WriteFile(valuesFile, values, 0o644); err != nil {
		t.Fatal(err)
	}
	objs, err := chart.Render(chart.Options{ReleaseName: "e2e-chart", Namespace: ns, ValueFiles: []string{valuesFile}})
	if err != nil {
		t.Fatal(err)
	}

	c, err := client.New(env.Config, client.Options{Scheme: chart.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mwc     *admissionregistrationv1.MutatingWebhookConfiguration
		deploy  *appsv1.Deployment
		policyC *corev1.ConfigMap
		serving *cmapi.Certificate
	)
	for _, o := range objs {
		switch o := o.(type) {
		case *admissionregistrationv1.MutatingWebhookConfiguration:
			mwc = o
			continue // applied once the webhook serves
		case *appsv1.Deployment:
			deploy = o
		case *corev1.ConfigMap:
			policyC = o
		case *cmapi.Certificate:
			if !o.Spec.IsCA {
				serving = o
			}
		}
		apply(t, c, o) // the API server validates every object, Deployment and PDB included
	}
	if mwc == nil || deploy == nil || policyC == nil || serving == nil {
		t.Fatalf("rendered objects lack the webhook configuration, Deployment, ConfigMap or serving Certificate")
	}

	// cert-manager issues the chain: self-signed Issuer -> CA -> CA Issuer -> serving certificate.
	waitCertReady(t, ns, serving.Name)
	secret := getSecret(t, ns, serving.Spec.SecretName)
	certDir := filepath.Join(dir, "tls")
	project(t, certDir, secret)

	// The webhook runs with the chart's ServiceAccount and RBAC, not as the suite's admin.
	kubeconfig := serviceAccountKubeconfig(t, ns, deploy.Spec.Template.Spec.ServiceAccountName, filepath.Join(dir, "sa.kubeconfig"))
	w := env.StartWebhook(t, e2e.WebhookOptions{
		PolicyYAML: []byte(policyC.Data["policy.yaml"]),
		CertDir:    certDir,
		CABundle:   secret.Data["ca.crt"],
		Args:       []string{"--kubeconfig", kubeconfig},
	})

	// The rendered webhook configuration, pointed at the process and kept to this test's
	// namespaces; cert-manager's cainjector fills in the CA.
	url := w.URL
	mwc.Webhooks[0].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url}
	sel := mwc.Webhooks[0].NamespaceSelector
	sel.MatchExpressions = append(sel.MatchExpressions, metav1.LabelSelectorRequirement{Key: s.Label, Operator: metav1.LabelSelectorOpExists})
	apply(t, c, mwc)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Delete(ctx, mwc); err != nil {
			t.Logf("delete %s: %v", mwc.Name, err)
		}
	})
	err = e2e.Poll(ctx, 60*time.Second, func(ctx context.Context) (bool, error) {
		got, err := env.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, mwc.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return bytes.Equal(got.Webhooks[0].ClientConfig.CABundle, secret.Data["ca.crt"]), nil
	})
	if err != nil {
		t.Fatalf("cainjector did not inject the CA of %s into %s: %v", serving.Name, mwc.Name, err)
	}

	const app = "e2e/chart-app:v1"
	digest := env.PushImage(t, app)
	env.WaitForMutation(t, enforced, env.UpstreamRef(app))
	stored := create(t, enforced, e2e.NewPod("app", env.UpstreamRef(app)))
	checkContainer(t, "enforce namespace", stored.Spec.Containers[0], pinned(app, digest), corev1.PullIfNotPresent)
	checkSecrets(t, stored, e2e.MirrorSecret)
	untouched := create(t, plain, e2e.NewPod("app", env.UpstreamRef(app)))
	checkContainer(t, "unlabelled namespace", untouched.Spec.Containers[0], env.UpstreamRef(app), "")
	checkSecrets(t, untouched)

	// The chart's matchConditions (CEL) run on the real API server: an UPDATE that changes an
	// image, and an ephemeral container, must still reach the webhook; a label change need not.
	t.Run("updates through matchConditions", func(t *testing.T) {
		const v2, debug = "e2e/chart-app:v2", "e2e/chart-debug:v1"
		d2 := env.PushImage(t, v2)
		dDebug := env.PushImage(t, debug)
		patch := `{"metadata":{"labels":{"touched":"yes"}},"spec":{"containers":[{"name":"c0","image":"` + env.UpstreamRef(v2) + `"}]}}`
		if _, err := env.Client.CoreV1().Pods(enforced).Patch(t.Context(), "app", k8stypes.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatalf("patch image: %v", err)
		}
		checkContainer(t, "updated container", get(t, enforced, "app").Spec.Containers[0], pinned(v2, d2), corev1.PullIfNotPresent)

		labelOnly := `{"metadata":{"labels":{"touched":"twice"}}}`
		if _, err := env.Client.CoreV1().Pods(enforced).Patch(t.Context(), "app", k8stypes.StrategicMergePatchType, []byte(labelOnly), metav1.PatchOptions{}); err != nil {
			t.Fatalf("patch labels: %v", err)
		}
		checkContainer(t, "label-only update", get(t, enforced, "app").Spec.Containers[0], pinned(v2, d2), corev1.PullIfNotPresent)

		pod := get(t, enforced, "app")
		pod.Spec.EphemeralContainers = append(pod.Spec.EphemeralContainers, corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{
				Name: "debugger", Image: env.UpstreamRef(debug), TerminationMessagePolicy: corev1.TerminationMessageReadFile,
			},
			TargetContainerName: "c0",
		})
		if _, err := env.Client.CoreV1().Pods(enforced).UpdateEphemeralContainers(t.Context(), "app", pod, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("update ephemeral containers: %v", err)
		}
		ec := ephemeral(t, get(t, enforced, "app"), "debugger")
		if ec.Image != pinned(debug, dDebug) {
			t.Errorf("ephemeral container image = %q, want %q", ec.Image, pinned(debug, dDebug))
		}
	})

	// Audit mode records its would-be changes as Events: the chart's ClusterRole must allow that.
	t.Run("audit events with the chart's RBAC", func(t *testing.T) {
		audited := env.Namespace(t, s, "audit")
		stored := create(t, audited, e2e.NewPod("app", env.UpstreamRef(app)))
		checkContainer(t, "audit namespace", stored.Spec.Containers[0], env.UpstreamRef(app), "")
		err := e2e.Poll(t.Context(), 30*time.Second, func(ctx context.Context) (bool, error) {
			events, err := env.Client.CoreV1().Events(audited).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err
			}
			for _, e := range events.Items {
				if e.Reason == "PullgateAudit" && e.InvolvedObject.Name == "app" {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("no PullgateAudit Event for the audited pod (RBAC for events?): %v", err)
		}
	})

	t.Run("renewal is served without a restart", func(t *testing.T) {
		before := servedSerial(t, w.Addr, secret.Data["ca.crt"])
		if err := certmanager.Renew(t.Context(), env.Config, ns, serving.Name); err != nil {
			t.Fatal(err)
		}
		var renewed *corev1.Secret
		err := e2e.Poll(t.Context(), 60*time.Second, func(ctx context.Context) (bool, error) {
			renewed = getSecret(t, ns, serving.Spec.SecretName)
			return !bytes.Equal(renewed.Data["tls.crt"], secret.Data["tls.crt"]), nil
		})
		if err != nil {
			t.Fatalf("cert-manager did not reissue %s: %v", serving.Name, err)
		}
		want := serial(t, renewed.Data["tls.crt"])
		if want == before {
			t.Fatalf("the reissued certificate has the old serial %s", want)
		}
		project(t, certDir, renewed) // what the kubelet does for the mounted Secret
		err = e2e.Poll(t.Context(), 60*time.Second, func(context.Context) (bool, error) {
			return servedSerial(t, w.Addr, renewed.Data["ca.crt"]) == want, nil
		})
		if err != nil {
			t.Fatalf("the webhook still serves serial %s, not the renewed %s: %v", servedSerial(t, w.Addr, renewed.Data["ca.crt"]), want, err)
		}
		select {
		case <-w.Process.Done():
			t.Fatalf("the webhook process exited: %v", w.Process.Err())
		default:
		}
		again := create(t, enforced, e2e.NewPod("after-renewal", env.UpstreamRef(app)))
		checkContainer(t, "after renewal", again.Spec.Containers[0], pinned(app, digest), corev1.PullIfNotPresent)
	})
}

// startCertManager installs cert-manager's CRDs and runs its controllers and cainjector until the
// test ends, logging to logPath.
func startCertManager(t *testing.T, logPath string) {
	t.Helper()
	stop, err := certmanager.Start(t.Context(), env.Config, logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("cert-manager: %v", err)
		}
		if t.Failed() {
			t.Logf("last lines of %s:\n%s", logPath, e2e.Tail(logPath, 40))
		}
	})
}

// apply server-side-applies obj as the chart's field manager would, strictly validated.
func apply(t *testing.T, c client.Client, obj client.Object) {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "status")
	err = c.Apply(t.Context(), client.ApplyConfigurationFromUnstructured(u), client.FieldOwner("helm"), client.ForceOwnership)
	if err != nil {
		t.Fatalf("apply %s %s: %v", obj.GetObjectKind().GroupVersionKind().Kind, obj.GetName(), err)
	}
}

func waitCertReady(t *testing.T, ns, name string) {
	t.Helper()
	c, err := client.New(env.Config, client.Options{Scheme: chart.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	var cert cmapi.Certificate
	err = e2e.Poll(t.Context(), 90*time.Second, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &cert); err != nil {
			return false, err
		}
		for _, cond := range cert.Status.Conditions {
			if cond.Type == cmapi.CertificateConditionReady && cond.Status == cmmeta.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("Certificate %s/%s not Ready: %v; conditions %+v", ns, name, err, cert.Status.Conditions)
	}
}

func getSecret(t *testing.T, ns, name string) *corev1.Secret {
	t.Helper()
	s, err := env.Client.CoreV1().Secrets(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get Secret %s/%s: %v", ns, name, err)
	}
	return s
}

var generation int

// project lays the Secret's keys out in dir the way the kubelet projects a Secret volume: each
// key is a symlink into ..data, which points at a generation directory and is swapped with a
// rename, so an update replaces every file at once.
func project(t *testing.T, dir string, s *corev1.Secret) {
	t.Helper()
	generation++
	gen := fmt.Sprintf("..gen-%d", generation)
	if err := os.MkdirAll(filepath.Join(dir, gen), 0o755); err != nil {
		t.Fatal(err)
	}
	for k, v := range s.Data {
		if err := os.WriteFile(filepath.Join(dir, gen, k), v, 0o600); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(dir, k)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", k), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(gen, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

// serviceAccountKubeconfig writes a kubeconfig with a token of the ServiceAccount.
func serviceAccountKubeconfig(t *testing.T, ns, sa, path string) string {
	t.Helper()
	expiry := int64(3600)
	tok, err := env.Client.CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), sa,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for ServiceAccount %s/%s: %v", ns, sa, err)
	}
	cfg := &rest.Config{Host: env.Config.Host, BearerToken: tok.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: env.Config.CAData}}
	if err := certmanager.WriteKubeconfig(cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// servedSerial is the serial number of the certificate the webhook presents now.
func servedSerial(t *testing.T, addr string, caPEM []byte) string {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		return "unreachable: " + err.Error()
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func serial(t *testing.T, certPEM []byte) string {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("tls.crt holds no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert.SerialNumber.String()
}
