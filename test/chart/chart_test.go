package chart

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/pullgate/pullgate/pkg/policy"
)

const (
	release   = "pullgate"
	namespace = "pullgate-system"
)

// rendered indexes one render's objects by kind and name.
type rendered struct {
	objs []client.Object
	vals chartutil.Values // the values the chart saw: defaults merged with the case's files
}

func get[T client.Object](t *testing.T, r rendered, name string) T {
	t.Helper()
	for _, o := range r.objs {
		if typed, ok := o.(T); ok && o.GetName() == name {
			return typed
		}
	}
	var zero T
	t.Fatalf("no %T named %q rendered", zero, name)
	return zero
}

func all[T client.Object](r rendered) []T {
	var out []T
	for _, o := range r.objs {
		if typed, ok := o.(T); ok {
			out = append(out, typed)
		}
	}
	return out
}

func render(t *testing.T, files ...string) rendered {
	t.Helper()
	objs, err := Render(Options{ReleaseName: release, Namespace: namespace, ValueFiles: files})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	chrt, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	user, err := (&values.Options{ValueFiles: files}).MergeValues(getter.Providers{})
	if err != nil {
		t.Fatal(err)
	}
	vals, err := chartutil.CoalesceValues(chrt, user)
	if err != nil {
		t.Fatal(err)
	}
	return rendered{objs: objs, vals: vals}
}

// valueFiles are the chart's examples and the valid-*.yaml files in testdata: every one must
// render to objects that keep the webhook's contract.
func valueFiles(t *testing.T) map[string][]string {
	t.Helper()
	dir, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]string{"defaults": nil}
	for _, pattern := range []string{filepath.Join(dir, "examples", "*.yaml"), filepath.Join("testdata", "valid-*.yaml")} {
		matches, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range matches {
			cases[filepath.Base(filepath.Dir(m))+"/"+filepath.Base(m)] = []string{m}
		}
	}
	if len(cases) < 3 {
		t.Fatalf("expected the default values and at least two example files, found %v", cases)
	}
	return cases
}

func TestRender(t *testing.T) {
	t.Parallel()
	for name, files := range valueFiles(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := render(t, files...)
			pol := checkPolicy(t, r)
			checkDeployment(t, r)
			checkPDB(t, r)
			checkService(t, r)
			checkWebhook(t, r, pol)
			checkCertificates(t, r)
			checkRBAC(t, r)
			checkController(t, r)
			checkOptional(t, r)
			for _, o := range r.objs {
				if l := o.GetLabels()["app.kubernetes.io/instance"]; l != release {
					t.Errorf("%T %s: app.kubernetes.io/instance=%q", o, o.GetName(), l)
				}
				switch o.(type) {
				case *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding, *admissionv1.MutatingWebhookConfiguration:
				default:
					if o.GetNamespace() != namespace {
						t.Errorf("%T %s: namespace %q, want the release namespace", o, o.GetName(), o.GetNamespace())
					}
				}
			}
		})
	}
}

// checkPolicy parses the ConfigMap's policy.yaml the way the webhook does (strict, defaulted,
// validated, compiled) and returns it.
func checkPolicy(t *testing.T, r rendered) policy.Policy {
	t.Helper()
	cm := get[*corev1.ConfigMap](t, r, release+"-policy")
	c, err := policy.Check([]byte(cm.Data["policy.yaml"]))
	if err != nil {
		t.Fatalf("rendered policy.yaml is not a valid policy: %v\n%s", err, cm.Data["policy.yaml"])
	}
	return c.Policy()
}

func checkDeployment(t *testing.T, r rendered) {
	t.Helper()
	d := get[*appsv1.Deployment](t, r, release)
	if want := int32(r.int(t, "replicaCount")); d.Spec.Replicas == nil || *d.Spec.Replicas != want {
		t.Errorf("replicas = %v, want %d", d.Spec.Replicas, want)
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("selector %v does not select the pod template labels %v", d.Spec.Selector, d.Spec.Template.Labels)
	}
	pod := d.Spec.Template.Spec
	psc := pod.SecurityContext
	if psc == nil || !isTrue(psc.RunAsNonRoot) || !is(psc.RunAsUser, 65532) || !is(psc.RunAsGroup, 65532) ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext not hardened: %+v", psc)
	}
	if !isTrue(pod.AutomountServiceAccountToken) {
		t.Error("the webhook reads Namespaces: the pod needs its service account token")
	}
	sa := pod.ServiceAccountName
	if r.bool(t, "serviceAccount.create") {
		get[*corev1.ServiceAccount](t, r, sa)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	if sc == nil || !isTrue(sc.RunAsNonRoot) || !is(sc.RunAsUser, 65532) || !is(sc.RunAsGroup, 65532) ||
		!isTrue(sc.ReadOnlyRootFilesystem) || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		isTrue(sc.Privileged) || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		len(sc.Capabilities.Add) > 0 || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("container securityContext not hardened: %+v", sc)
	}
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[res]; !ok {
			t.Errorf("no %s request", res)
		}
	}
	if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
		t.Error("no memory limit")
	}

	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	wantArgs := []string{
		"serve",
		"--policy=/etc/pullgate/policy.yaml",
		"--cert-dir=/tls",
		fmt.Sprintf("--port=%d", ports["webhook"]),
		fmt.Sprintf("--metrics-bind-address=:%d", ports["metrics"]),
		fmt.Sprintf("--health-probe-bind-address=:%d", ports["health"]),
	}
	if len(c.Args) < len(wantArgs) || !slices.Equal(c.Args[:len(wantArgs)], wantArgs) {
		t.Errorf("args = %q, want them to start with %q", c.Args, wantArgs)
	}
	if len(c.Command) != 0 {
		t.Errorf("command %q overrides the image entrypoint /webhook", c.Command)
	}
	for probe, want := range map[*corev1.Probe]string{c.LivenessProbe: "/healthz", c.ReadinessProbe: "/readyz"} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != want || probe.HTTPGet.Port.String() != "health" {
			t.Errorf("probe for %s not on the health port: %+v", want, probe)
		}
	}
	if ports["health"] == 0 || ports["webhook"] == 0 || ports["metrics"] == 0 {
		t.Errorf("container ports %v lack webhook, metrics or health", ports)
	}
	var podNS bool
	for _, e := range c.Env {
		podNS = podNS || (e.Name == "POD_NAMESPACE" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace")
	}
	if !podNS {
		t.Error("POD_NAMESPACE is not set from the downward API")
	}

	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	for path, check := range map[string]func(corev1.Volume) bool{
		"/etc/pullgate": func(v corev1.Volume) bool {
			return v.ConfigMap != nil && v.ConfigMap.Name == release+"-policy"
		},
		"/tls": func(v corev1.Volume) bool {
			cert := get[*cmapi.Certificate](t, r, release+"-serving")
			return v.Secret != nil && v.Secret.SecretName == cert.Spec.SecretName
		},
	} {
		m, ok := mounts[path]
		switch {
		case !ok:
			t.Errorf("nothing mounted at %s", path)
		case m.SubPath != "":
			t.Errorf("%s is mounted with subPath, which never sees updates: no hot reload", path)
		case !m.ReadOnly:
			t.Errorf("%s is mounted writable", path)
		case !check(volumes[m.Name]):
			t.Errorf("%s mounts the wrong volume: %+v", path, volumes[m.Name])
		}
	}

	if r.bool(t, "topologySpread.enabled") {
		var spread bool
		for _, tsc := range pod.TopologySpreadConstraints {
			sel, err := metav1.LabelSelectorAsSelector(tsc.LabelSelector)
			spread = spread || (tsc.TopologyKey == "kubernetes.io/hostname" && err == nil && sel.Matches(labels.Set(d.Spec.Template.Labels)))
		}
		if !spread {
			t.Errorf("replicas are not spread across nodes: %+v", pod.TopologySpreadConstraints)
		}
	}
	if want := r.str(t, "priorityClassName"); pod.PriorityClassName != want {
		t.Errorf("priorityClassName = %q, want %q", pod.PriorityClassName, want)
	}
	if digest := r.str(t, "image.digest"); digest != "" && !strings.HasSuffix(c.Image, "@"+digest) {
		t.Errorf("image %q is not pinned by digest %s", c.Image, digest)
	}
}

func checkPDB(t *testing.T, r rendered) {
	t.Helper()
	if !r.bool(t, "podDisruptionBudget.enabled") {
		return
	}
	pdb := get[*policyv1.PodDisruptionBudget](t, r, release)
	d := get[*appsv1.Deployment](t, r, release)
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() < 1 || pdb.Spec.MinAvailable.IntValue() >= int(*d.Spec.Replicas) {
		t.Errorf("minAvailable %v: want at least 1 and fewer than the %d replicas", pdb.Spec.MinAvailable, *d.Spec.Replicas)
	}
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("PDB selector %v does not select the webhook pods", pdb.Spec.Selector)
	}
}

func checkService(t *testing.T, r rendered) {
	t.Helper()
	svc := get[*corev1.Service](t, r, release)
	d := get[*appsv1.Deployment](t, r, release)
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("Service selector %v does not select the webhook pods", svc.Spec.Selector)
	}
	for _, p := range svc.Spec.Ports {
		if p.Name == "webhook" && p.TargetPort.String() == "webhook" {
			return
		}
	}
	t.Errorf("Service has no webhook port targeting the container's webhook port: %+v", svc.Spec.Ports)
}

func checkWebhook(t *testing.T, r rendered, pol policy.Policy) {
	t.Helper()
	mwc := get[*admissionv1.MutatingWebhookConfiguration](t, r, release)
	if got, want := mwc.Annotations["cert-manager.io/inject-ca-from"], namespace+"/"+release+"-serving"; got != want {
		t.Errorf("inject-ca-from = %q, want %q", got, want)
	}
	if len(mwc.Webhooks) != 1 {
		t.Fatalf("want one webhook, got %d", len(mwc.Webhooks))
	}
	w := mwc.Webhooks[0]
	svc := get[*corev1.Service](t, r, release)
	if s := w.ClientConfig.Service; s == nil || s.Name != svc.Name || s.Namespace != namespace || s.Path == nil ||
		*s.Path != "/mutate-v1-pod" || s.Port == nil || *s.Port != svc.Spec.Ports[0].Port || w.ClientConfig.URL != nil {
		t.Errorf("clientConfig does not point at the Service's /mutate-v1-pod: %+v", w.ClientConfig)
	}
	if w.SideEffects == nil || *w.SideEffects != admissionv1.SideEffectClassNoneOnDryRun {
		t.Errorf("sideEffects = %v", w.SideEffects)
	}
	if !slices.Equal(w.AdmissionReviewVersions, []string{"v1"}) {
		t.Errorf("admissionReviewVersions = %v", w.AdmissionReviewVersions)
	}
	if w.ReinvocationPolicy == nil || *w.ReinvocationPolicy != admissionv1.IfNeededReinvocationPolicy {
		t.Errorf("reinvocationPolicy = %v", w.ReinvocationPolicy)
	}
	if want := admissionv1.FailurePolicyType(r.str(t, "webhook.failurePolicy")); w.FailurePolicy == nil || *w.FailurePolicy != want {
		t.Errorf("failurePolicy = %v, want %s", w.FailurePolicy, want)
	}
	if w.TimeoutSeconds == nil || *w.TimeoutSeconds < 1 || *w.TimeoutSeconds > 30 {
		t.Fatalf("timeoutSeconds = %v, want 1..30", w.TimeoutSeconds)
	}
	if budget := time.Duration(*w.TimeoutSeconds) * time.Second; *pol.Resolve.Enabled && budget <= pol.Resolve.Timeout.Duration {
		t.Errorf("timeoutSeconds %s does not exceed resolve.timeout %s", budget, pol.Resolve.Timeout.Duration)
	}

	type rule struct{ resource, ops string }
	var rules []rule
	for _, rw := range w.Rules {
		if !slices.Equal(rw.APIGroups, []string{""}) || !slices.Equal(rw.APIVersions, []string{"v1"}) {
			t.Errorf("rule %+v: want core/v1", rw)
		}
		for _, res := range rw.Resources {
			var ops []string
			for _, op := range rw.Operations {
				ops = append(ops, string(op))
			}
			rules = append(rules, rule{res, strings.Join(ops, ",")})
		}
	}
	if want := []rule{{"pods", "CREATE,UPDATE"}, {"pods/ephemeralcontainers", "UPDATE"}}; !slices.Equal(rules, want) {
		t.Errorf("rules = %v, want %v", rules, want)
	}

	exprs := map[string]metav1.LabelSelectorRequirement{}
	for _, e := range w.NamespaceSelector.MatchExpressions {
		exprs[e.Key+" "+string(e.Operator)] = e
	}
	if e := exprs[policy.ModeLabel+" In"]; !slices.Equal(e.Values, []string{"enforce", "audit"}) {
		t.Errorf("namespaceSelector does not opt in by %s In (enforce, audit): %+v", policy.ModeLabel, w.NamespaceSelector)
	}
	excluded := exprs["kubernetes.io/metadata.name NotIn"].Values
	for _, ns := range append([]string{"kube-system", namespace}, r.strs(t, "webhook.excludeNamespaces")...) {
		if !slices.Contains(excluded, ns) {
			t.Errorf("namespace %s is not excluded: NotIn %v", ns, excluded)
		}
	}
	sel, err := metav1.LabelSelectorAsSelector(w.NamespaceSelector)
	if err != nil {
		t.Fatal(err)
	}
	for ns, want := range map[string]bool{"kube-system": false, namespace: false, "team-a": true} {
		if got := sel.Matches(labels.Set{policy.ModeLabel: "enforce", "kubernetes.io/metadata.name": ns}); got != want {
			t.Errorf("enforce-labelled namespace %s selected = %v, want %v", ns, got, want)
		}
	}
	if sel.Matches(labels.Set{"kubernetes.io/metadata.name": "team-a"}) {
		t.Error("an unlabelled namespace is selected")
	}
	var names []string
	for _, mc := range w.MatchConditions {
		names = append(names, mc.Name)
	}
	if r.bool(t, "webhook.matchConditions.skipMirrorPods") && !slices.Contains(names, "not-mirror-pod") {
		t.Errorf("matchConditions %v lack not-mirror-pod", names)
	}
}

func checkCertificates(t *testing.T, r rendered) {
	t.Helper()
	cert := get[*cmapi.Certificate](t, r, release+"-serving")
	for _, want := range []string{release + "." + namespace + ".svc", release + "." + namespace + ".svc.cluster.local"} {
		if !slices.Contains(cert.Spec.DNSNames, want) {
			t.Errorf("serving certificate lacks DNS name %s: %v", want, cert.Spec.DNSNames)
		}
	}
	if !slices.Contains(cert.Spec.Usages, cmapi.UsageServerAuth) {
		t.Errorf("serving certificate usages %v lack server auth", cert.Spec.Usages)
	}
	issuers := all[*cmapi.Issuer](r)
	if ref := r.str(t, "certManager.issuerRef.name"); ref != "" {
		if cert.Spec.IssuerRef.Name != ref || len(issuers) > 0 {
			t.Errorf("with issuerRef %s the serving certificate must use it and no Issuer be made: %+v, %d issuers", ref, cert.Spec.IssuerRef, len(issuers))
		}
		return
	}
	// Default chain: self-signed Issuer -> CA Certificate -> CA Issuer -> serving Certificate.
	caIssuer := get[*cmapi.Issuer](t, r, cert.Spec.IssuerRef.Name)
	if cert.Spec.IssuerRef.Kind != "Issuer" || caIssuer.Spec.CA == nil {
		t.Fatalf("serving certificate is not issued by a CA Issuer: %+v", cert.Spec.IssuerRef)
	}
	var ca *cmapi.Certificate
	for _, c := range all[*cmapi.Certificate](r) {
		if c.Spec.SecretName == caIssuer.Spec.CA.SecretName {
			ca = c
		}
	}
	if ca == nil || !ca.Spec.IsCA {
		t.Fatalf("no CA Certificate writes the CA Issuer's secret %s", caIssuer.Spec.CA.SecretName)
	}
	if self := get[*cmapi.Issuer](t, r, ca.Spec.IssuerRef.Name); self.Spec.SelfSigned == nil {
		t.Errorf("CA certificate's issuer %s is not self-signed", self.Name)
	}
}

func checkRBAC(t *testing.T, r rendered) {
	t.Helper()
	cr := get[*rbacv1.ClusterRole](t, r, release)
	usePod := r.bool(t, "policy.resolve.usePodPullSecrets")
	for _, rule := range cr.Rules {
		switch {
		case slices.Equal(rule.Resources, []string{"namespaces"}) && slices.Equal(rule.Verbs, []string{"get", "list", "watch"}):
		case slices.Equal(rule.Resources, []string{"events"}) && slices.Equal(rule.Verbs, []string{"create", "patch"}):
		case usePod && slices.Equal(rule.Resources, []string{"secrets"}) && slices.Equal(rule.Verbs, []string{"get"}):
		default:
			t.Errorf("ClusterRole grants more than reading namespaces and recording events: %+v", rule)
		}
	}
	crb := get[*rbacv1.ClusterRoleBinding](t, r, release)
	sa := get[*appsv1.Deployment](t, r, release).Spec.Template.Spec.ServiceAccountName
	if crb.RoleRef.Name != cr.Name || len(crb.Subjects) != 1 || crb.Subjects[0].Name != sa || crb.Subjects[0].Namespace != namespace {
		t.Errorf("ClusterRoleBinding does not bind %s to the webhook's service account: %+v", cr.Name, crb)
	}

	var secrets []string
	for _, m := range append(r.list(t, "policy.mirrors"), r.list(t, "policy.registries")...) {
		if s, _ := m.(map[string]any)["credentialsSecret"].(string); s != "" && !slices.Contains(secrets, s) {
			secrets = append(secrets, s)
		}
	}
	slices.Sort(secrets)
	roles := slices.DeleteFunc(all[*rbacv1.Role](r), func(r *rbacv1.Role) bool { return r.Name == controllerName })
	if len(secrets) == 0 {
		if len(roles) > 0 {
			t.Errorf("no mirror names a credentialsSecret, yet a Role is rendered: %+v", roles)
		}
		return
	}
	role := get[*rbacv1.Role](t, r, release+"-credentials")
	want := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: secrets, Verbs: []string{"get", "watch"}}}
	if fmt.Sprint(role.Rules) != fmt.Sprint(want) {
		t.Errorf("credentials Role rules = %+v, want %+v", role.Rules, want)
	}
	rb := get[*rbacv1.RoleBinding](t, r, release+"-credentials")
	if rb.RoleRef.Name != role.Name || len(rb.Subjects) != 1 || rb.Subjects[0].Name != sa {
		t.Errorf("RoleBinding does not bind the credentials Role to the webhook: %+v", rb)
	}
}

func checkOptional(t *testing.T, r rendered) {
	t.Helper()
	if got, want := len(all[*monitoringv1.ServiceMonitor](r)), r.bool(t, "metrics.serviceMonitor.enabled"); (got == 1) != want {
		t.Errorf("%d ServiceMonitors with serviceMonitor.enabled=%v", got, want)
	}
	nps := all[*networkingv1.NetworkPolicy](r)
	if want := r.bool(t, "networkPolicy.enabled"); (len(nps) == 1) != want {
		t.Fatalf("%d NetworkPolicies with networkPolicy.enabled=%v", len(nps), want)
	}
	for _, np := range nps {
		var webhook bool
		for _, in := range np.Spec.Ingress {
			for _, p := range in.Ports {
				webhook = webhook || (p.Port != nil && p.Port.String() == "webhook")
			}
		}
		if !webhook {
			t.Errorf("NetworkPolicy blocks the webhook port: %+v", np.Spec.Ingress)
		}
	}
}

// TestRenderRefuses renders each testdata/invalid-*.yaml; its first line says `# want: <text>`,
// text the error must contain.
func TestRenderRefuses(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob(filepath.Join("testdata", "invalid-*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no invalid values files: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(data), "\n")
			want, ok := strings.CutPrefix(first, "# want: ")
			if !ok {
				t.Fatalf("first line must be `# want: <error text>`, got %q", first)
			}
			_, err = Render(Options{ValueFiles: []string{f}})
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error = %v, want it to contain %q", err, want)
			}
		})
	}
}

// TestDecodeIsStrict makes sure the strictness the tests rely on is real: a field the Go type does
// not know fails.
func TestDecodeIsStrict(t *testing.T) {
	t.Parallel()
	for name, doc := range map[string]string{
		"core":         "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {portz: []}\n",
		"cert-manager": "apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {name: x}\nspec: {secretName: s, dnsName: [a]}\n",
		"duplicate":    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\ndata: {c: d}\n",
		"unknown kind": "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: x}\n",
	} {
		if _, err := Decode(doc); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

// TestTimeoutDefaultMatchesPolicy: when policy.resolve.timeout is left out, the chart assumes the
// webhook's default when it checks webhook.timeoutSeconds; keep the two in step.
func TestTimeoutDefaultMatchesPolicy(t *testing.T) {
	t.Parallel()
	secs := int(policy.DefaultTimeout / time.Second)
	for _, tc := range []struct {
		timeoutSeconds int
		ok             bool
	}{{secs, false}, {secs + 1, true}} {
		_, err := Render(Options{Set: []string{"policy.resolve.timeout=null", fmt.Sprintf("webhook.timeoutSeconds=%d", tc.timeoutSeconds)}})
		if (err == nil) != tc.ok {
			t.Errorf("timeoutSeconds %d without resolve.timeout: err = %v, want ok=%v", tc.timeoutSeconds, err, tc.ok)
		}
	}
}

// TestValuesDocumented: every key in values.yaml carries a `# --` comment, or is a block whose
// keys do, or lies inside a documented value; and the README's table lists every documented key.
func TestValuesDocumented(t *testing.T) {
	t.Parallel()
	dir, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	readme, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	keyLine := regexp.MustCompile(`^( *)([A-Za-z0-9_]+):`)
	var path []string // keys of the enclosing blocks, by indentation level
	documented := false
	blocks := map[string]bool{} // key path -> it has documented children
	docs := map[string]bool{}   // documented key paths; keys below one are part of its value
	var undocumented []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "# --") {
			documented = true
			continue
		}
		m := keyLine.FindStringSubmatch(line)
		if m == nil {
			if strings.TrimSpace(line) == "" {
				documented = false
			}
			continue
		}
		depth := len(m[1]) / 2
		path = append(path[:min(depth, len(path))], m[2])
		key := strings.Join(path, ".")
		if documented {
			docs[key] = true
			for i := 1; i < len(path); i++ {
				blocks[strings.Join(path[:i], ".")] = true
			}
			if !strings.Contains(string(readme), "`"+key+"`") {
				t.Errorf("README.md does not list `%s`", key)
			}
		} else {
			undocumented = append(undocumented, key)
		}
		documented = false
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for _, key := range undocumented {
		covered := blocks[key]
		for p := key; !covered && strings.Contains(p, "."); {
			p = p[:strings.LastIndex(p, ".")]
			covered = docs[p]
		}
		if !covered {
			t.Errorf("values.yaml: %s has no `# --` comment", key)
		}
	}
}

// Helpers reading the effective values.

func (r rendered) lookup(t *testing.T, key string) any {
	t.Helper()
	var cur any = map[string]any(r.vals)
	for _, k := range strings.Split(key, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

func (r rendered) str(t *testing.T, key string) string {
	s, _ := r.lookup(t, key).(string)
	return s
}

func (r rendered) bool(t *testing.T, key string) bool {
	b, _ := r.lookup(t, key).(bool)
	return b
}

func (r rendered) int(t *testing.T, key string) int {
	switch v := r.lookup(t, key).(type) {
	case float64:
		return int(v)
	case int64:
		return int(v)
	case int:
		return v
	}
	t.Fatalf("%s is not a number", key)
	return 0
}

func (r rendered) list(t *testing.T, key string) []any {
	l, _ := r.lookup(t, key).([]any)
	return l
}

func (r rendered) strs(t *testing.T, key string) []string {
	var out []string
	for _, v := range r.list(t, key) {
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

func isTrue(b *bool) bool { return b != nil && *b }

func is(p *int64, v int64) bool { return p != nil && *p == v }
