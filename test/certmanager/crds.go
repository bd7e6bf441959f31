package certmanager

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	cmclient "github.com/cert-manager/cert-manager/pkg/client/clientset/versioned"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

const module = "github.com/cert-manager/cert-manager"

// CRDDir is deploy/crds of the cert-manager module this test module requires, in the module
// cache; the go command says where.
func CRDDir(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", module).Output()
	if err != nil {
		return "", fmt.Errorf("go list -m %s: %w", module, err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "deploy", "crds")
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("cert-manager CRDs: %w (run go mod download %s)", err, module)
	}
	return dir, nil
}

// CRDs reads every CustomResourceDefinition in dir, strictly.
func CRDs(dir string) ([]*apiextv1.CustomResourceDefinition, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	var crds []*apiextv1.CustomResourceDefinition
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		crd := &apiextv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(bytes.TrimPrefix(data, []byte("---\n")), crd); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		if crd.Kind == "CustomResourceDefinition" {
			crds = append(crds, crd)
		}
	}
	if len(crds) == 0 {
		return nil, fmt.Errorf("no CustomResourceDefinitions in %s", dir)
	}
	return crds, nil
}

// ApplyCRDs installs cert-manager's CRDs server-side and waits until the API serves them.
func ApplyCRDs(ctx context.Context, cfg *rest.Config) error {
	dir, err := CRDDir(ctx)
	if err != nil {
		return err
	}
	crds, err := CRDs(dir)
	if err != nil {
		return err
	}
	return InstallCRDs(ctx, cfg, crds)
}

// InstallCRDs applies crds server-side and waits until the API serves them (also the report
// CRDs of the e2e suite).
func InstallCRDs(ctx context.Context, cfg *rest.Config, crds []*apiextv1.CustomResourceDefinition) error {
	c, err := apiextclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	for _, crd := range crds {
		data, err := yaml.Marshal(crd)
		if err != nil {
			return err
		}
		_, err = c.ApiextensionsV1().CustomResourceDefinitions().Patch(ctx, crd.Name, types.ApplyPatchType, data,
			metav1.PatchOptions{FieldManager: "pullgate-test", Force: ptr(true)})
		if err != nil {
			return fmt.Errorf("apply CRD %s: %w", crd.Name, err)
		}
	}
	for _, crd := range crds {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			got, err := c.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, crd.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, cond := range got.Status.Conditions {
				if cond.Type == apiextv1.Established && cond.Status == apiextv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("CRD %s not established: %w", crd.Name, err)
		}
	}
	return nil
}

// Renew asks cert-manager to reissue a Certificate now, as `cmctl renew` does: it sets the
// Issuing condition, which the issuing pipeline picks up.
func Renew(ctx context.Context, cfg *rest.Config, namespace, name string) error {
	c, err := cmclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	cert, err := c.CertmanagerV1().Certificates(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	now := metav1.Now()
	cond := cmapi.CertificateCondition{
		Type: cmapi.CertificateConditionIssuing, Status: cmmeta.ConditionTrue, LastTransitionTime: &now,
		Reason: "ManuallyTriggered", Message: "Certificate re-issuance manually triggered",
		ObservedGeneration: cert.Generation,
	}
	cert.Status.Conditions = append(cert.Status.Conditions, cond)
	if _, err := c.CertmanagerV1().Certificates(namespace).UpdateStatus(ctx, cert, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("renew %s/%s: %w", namespace, name, err)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }
