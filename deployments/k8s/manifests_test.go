package k8s

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/client_golang/prometheus"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	psaapi "k8s.io/pod-security-admission/api"
	psapolicy "k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	"github.com/setflow/setflow/metrics"
)

// overlays are the deployable targets; each must pass every check.
var overlays = []string{"overlays/dev", "overlays/prod"}

// object is one rendered, strictly decoded object.
type object struct {
	gvk  schema.GroupVersionKind
	name string
	obj  runtime.Object
}

func newScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, autoscalingv2.AddToScheme,
		policyv1.AddToScheme, networkingv1.AddToScheme, monitoringv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// render builds an overlay with kustomize and decodes every object strictly:
// an unknown or duplicated field, a wrong type or an unknown kind fails.
func render(t *testing.T, dir string) []object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	sch := newScheme(t)
	strict := json.NewSerializerWithOptions(json.DefaultMetaFactory, sch, sch,
		json.SerializerOptions{Yaml: true, Strict: true})
	var out []object
	for _, r := range res.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		obj, gvk, err := strict.Decode(y, nil, nil)
		if err != nil {
			t.Errorf("%s: %s %s: %v", dir, r.GetKind(), r.GetName(), err)
			continue
		}
		out = append(out, object{gvk: *gvk, name: r.GetName(), obj: obj})
	}
	if len(out) == 0 {
		t.Fatalf("%s rendered nothing", dir)
	}
	return out
}

// podTemplates returns the pod templates of the workload objects.
func podTemplates(objs []object) map[string]*corev1.PodTemplateSpec {
	pods := map[string]*corev1.PodTemplateSpec{}
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *appsv1.Deployment:
			pods["Deployment/"+o.name] = &v.Spec.Template
		case *batchv1.Job:
			pods["Job/"+o.name] = &v.Spec.Template
		case *appsv1.StatefulSet:
			pods["StatefulSet/"+o.name] = &v.Spec.Template
		case *appsv1.DaemonSet:
			pods["DaemonSet/"+o.name] = &v.Spec.Template
		case *batchv1.CronJob:
			pods["CronJob/"+o.name] = &v.Spec.JobTemplate.Spec.Template
		case *corev1.Pod:
			pods["Pod/"+o.name] = &corev1.PodTemplateSpec{ObjectMeta: v.ObjectMeta, Spec: v.Spec}
		}
	}
	return pods
}

// restrictedViolations evaluates a pod against PSS "restricted" (latest).
func restrictedViolations(t *testing.T, meta *metav1.ObjectMeta, spec *corev1.PodSpec) []string {
	t.Helper()
	ev, err := psapolicy.NewEvaluator(psapolicy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range ev.EvaluatePod(psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}, meta, spec) {
		if !r.Allowed {
			out = append(out, r.ForbiddenReason+": "+r.ForbiddenDetail)
		}
	}
	return out
}

// TestOverlaysRenderStrictlyAndPassRestricted: every overlay renders, every
// object decodes strictly, and every pod template passes PSS restricted.
func TestOverlaysRenderStrictlyAndPassRestricted(t *testing.T) {
	for _, dir := range overlays {
		t.Run(dir, func(t *testing.T) {
			objs := render(t, dir)
			pods := podTemplates(objs)
			if len(pods) < 5 {
				t.Fatalf("%d pod templates, want ingress, relay, worker, codec server and migrate job", len(pods))
			}
			for name, p := range pods {
				if v := restrictedViolations(t, &p.ObjectMeta, &p.Spec); len(v) > 0 {
					t.Errorf("%s violates PSS restricted: %s", name, strings.Join(v, "; "))
				}
			}
		})
	}
}

// TestRestrictedEvaluatorCatchesWeakening: the check above can fail. Each
// weakening of a rendered pod that the old manifests had (no runAsNonRoot,
// no seccomp profile, capabilities kept, privilege escalation allowed) is
// reported.
func TestRestrictedEvaluatorCatchesWeakening(t *testing.T) {
	pods := podTemplates(render(t, "overlays/prod"))
	base := pods["Deployment/setflow-worker"]
	if base == nil {
		t.Fatal("no worker Deployment")
	}
	weaken := map[string]func(*corev1.PodSpec){
		"runAsNonRoot": func(s *corev1.PodSpec) { s.SecurityContext.RunAsNonRoot = nil },
		"seccomp":      func(s *corev1.PodSpec) { s.SecurityContext.SeccompProfile = nil },
		"capabilities": func(s *corev1.PodSpec) { s.Containers[0].SecurityContext.Capabilities = nil },
		"escalation": func(s *corev1.PodSpec) {
			s.InitContainers[0].SecurityContext.AllowPrivilegeEscalation = nil
		},
		"root user": func(s *corev1.PodSpec) { zero := int64(0); s.Containers[0].SecurityContext.RunAsUser = &zero },
	}
	for name, f := range weaken {
		p := base.DeepCopy()
		f(&p.Spec)
		if v := restrictedViolations(t, &p.ObjectMeta, &p.Spec); len(v) == 0 {
			t.Errorf("weakened %s passed PSS restricted", name)
		}
	}
}

// TestStrictDecodingCatchesTypos: a misspelt field is refused (a plain
// decode would drop it silently).
func TestStrictDecodingCatchesTypos(t *testing.T) {
	sch := newScheme(t)
	strict := json.NewSerializerWithOptions(json.DefaultMetaFactory, sch, sch, json.SerializerOptions{Yaml: true, Strict: true})
	y := []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: 1\n  template:\n    spec:\n      securityContext: {runAsNonRoot: true, seccompProfle: {type: RuntimeDefault}}\n      containers: [{name: x, image: x}]\n")
	if _, _, err := strict.Decode(y, nil, nil); err == nil {
		t.Fatal("a misspelt seccompProfile decoded without error")
	}
}

func container(p *corev1.PodTemplateSpec, name string) *corev1.Container {
	for i := range p.Spec.Containers {
		if p.Spec.Containers[i].Name == name {
			return &p.Spec.Containers[i]
		}
	}
	return nil
}

// TestDeploymentsProbesSchemaWaitAndMetrics: every Deployment has readiness
// and liveness probes on a declared port (/readyz and /healthz); the
// ingress, relay and worker wait for the schema in an init container and
// expose a metrics port; the ConfigMap turns metrics and health on.
func TestDeploymentsProbesSchemaWaitAndMetrics(t *testing.T) {
	for _, dir := range overlays {
		t.Run(dir, func(t *testing.T) {
			objs := render(t, dir)
			var cm *corev1.ConfigMap
			deployments := 0
			for _, o := range objs {
				if c, ok := o.obj.(*corev1.ConfigMap); ok && o.name == "setflow" {
					cm = c
				}
				d, ok := o.obj.(*appsv1.Deployment)
				if !ok {
					continue
				}
				deployments++
				for _, c := range d.Spec.Template.Spec.Containers {
					ports := map[string]bool{}
					for _, p := range c.Ports {
						ports[p.Name] = true
					}
					for kind, pr := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
						if pr == nil || pr.HTTPGet == nil {
							t.Errorf("%s/%s: no HTTP %s probe", o.name, c.Name, kind)
							continue
						}
						if !ports[pr.HTTPGet.Port.String()] {
							t.Errorf("%s/%s: %s probe on undeclared port %q", o.name, c.Name, kind, pr.HTTPGet.Port.String())
						}
					}
					if c.LivenessProbe != nil && c.LivenessProbe.HTTPGet != nil && c.LivenessProbe.HTTPGet.Path != "/healthz" {
						t.Errorf("%s/%s: liveness on %s, want /healthz", o.name, c.Name, c.LivenessProbe.HTTPGet.Path)
					}
				}
				main := container(&d.Spec.Template, strings.TrimPrefix(o.name, "setflow-"))
				if main == nil {
					t.Errorf("%s: no container named after it", o.name)
					continue
				}
				hasMetrics := slices.ContainsFunc(main.Ports, func(p corev1.ContainerPort) bool { return p.Name == "metrics" && p.ContainerPort == 9090 })
				if !hasMetrics {
					t.Errorf("%s: no metrics port 9090", o.name)
				}
				if o.name == "setflow-codec-server" {
					// It reads no ConfigMap (secrets only) and needs no
					// schema: its metrics are turned on in its own env.
					if !slices.ContainsFunc(main.Env, func(e corev1.EnvVar) bool { return e.Name == "SETFLOW_METRICS_LISTEN" && e.Value == ":9090" }) {
						t.Errorf("%s: SETFLOW_METRICS_LISTEN is not :9090", o.name)
					}
					continue
				}
				if main.ReadinessProbe == nil || main.ReadinessProbe.HTTPGet == nil || main.ReadinessProbe.HTTPGet.Path != "/readyz" {
					t.Errorf("%s: readiness is not /readyz", o.name)
				}
				waits := slices.ContainsFunc(d.Spec.Template.Spec.InitContainers, func(c corev1.Container) bool {
					return slices.Equal(c.Args, []string{"migrate", "-wait"}) && c.Image == main.Image
				})
				if !waits {
					t.Errorf("%s: no init container running `setflow migrate -wait` with its own image", o.name)
				}
			}
			if deployments != 4 {
				t.Errorf("%d Deployments, want ingress, relay, worker, codec server", deployments)
			}
			if cm == nil {
				t.Fatal("no ConfigMap setflow")
			}
			if cm.Data["SETFLOW_METRICS_LISTEN"] != ":9090" || cm.Data["SETFLOW_HEALTH_LISTEN"] != ":8081" {
				t.Errorf("ConfigMap: SETFLOW_METRICS_LISTEN=%q SETFLOW_HEALTH_LISTEN=%q, want :9090 and :8081",
					cm.Data["SETFLOW_METRICS_LISTEN"], cm.Data["SETFLOW_HEALTH_LISTEN"])
			}
		})
	}
}

// TestProdPinsImagesAndKeepsSecretsByReference: the prod overlay's images
// carry a version tag or digest (never latest), no Secret is rendered (they
// are referenced), and the Temporal mTLS files are mounted where the
// ConfigMap points.
func TestProdPinsImagesAndKeepsSecretsByReference(t *testing.T) {
	objs := render(t, "overlays/prod")
	pinned := regexp.MustCompile(`^[^:@]+(:v?[0-9][^:@]*)?(@sha256:[0-9a-f]{64})?$`)
	var cm *corev1.ConfigMap
	for _, o := range objs {
		if _, ok := o.obj.(*corev1.Secret); ok {
			t.Errorf("Secret %s rendered into the overlay: secrets are referenced, never committed", o.name)
		}
		if c, ok := o.obj.(*corev1.ConfigMap); ok {
			cm = c
		}
	}
	for name, p := range podTemplates(objs) {
		for _, c := range append(slices.Clone(p.Spec.InitContainers), p.Spec.Containers...) {
			if !pinned.MatchString(c.Image) || !strings.ContainsAny(c.Image, ":@") {
				t.Errorf("%s/%s: image %q is not pinned to a version tag or digest", name, c.Name, c.Image)
			}
		}
	}
	if cm == nil {
		t.Fatal("no ConfigMap")
	}
	for name, p := range podTemplates(objs) {
		if name != "Deployment/setflow-relay" && name != "Deployment/setflow-worker" {
			continue
		}
		for _, env := range []string{"TEMPORAL_TLS_CERT", "TEMPORAL_TLS_KEY", "TEMPORAL_TLS_CA"} {
			file := cm.Data[env]
			if file == "" {
				t.Errorf("%s not set in prod", env)
				continue
			}
			mounted := slices.ContainsFunc(p.Spec.Containers[0].VolumeMounts, func(m corev1.VolumeMount) bool {
				return strings.HasPrefix(file, m.MountPath+"/")
			})
			if !mounted {
				t.Errorf("%s: %s=%s is not under a mounted volume", name, env, file)
			}
		}
	}
}

// TestEveryPodIsCoveredByNetworkPolicies: a default deny exists, every pod
// is selected by an Ingress and an Egress policy, the ingress admits only
// the load balancer on its HTTP port, and the codec server only the
// Temporal UI.
func TestEveryPodIsCoveredByNetworkPolicies(t *testing.T) {
	for _, dir := range overlays {
		t.Run(dir, func(t *testing.T) {
			objs := render(t, dir)
			var pols []*networkingv1.NetworkPolicy
			for _, o := range objs {
				if p, ok := o.obj.(*networkingv1.NetworkPolicy); ok {
					pols = append(pols, p)
				}
			}
			denyAll := slices.ContainsFunc(pols, func(p *networkingv1.NetworkPolicy) bool {
				return len(p.Spec.PodSelector.MatchLabels) == 0 && len(p.Spec.PodSelector.MatchExpressions) == 0 &&
					len(p.Spec.Ingress) == 0 && len(p.Spec.Egress) == 0 && len(p.Spec.PolicyTypes) == 2
			})
			if !denyAll {
				t.Error("no default-deny NetworkPolicy")
			}
			for name, p := range podTemplates(objs) {
				set := labels.Set(p.Labels)
				var ingressRules []networkingv1.NetworkPolicyIngressRule
				egress := false
				for _, pol := range pols {
					sel, err := metav1.LabelSelectorAsSelector(&pol.Spec.PodSelector)
					if err != nil {
						t.Fatal(err)
					}
					if len(pol.Spec.PodSelector.MatchLabels)+len(pol.Spec.PodSelector.MatchExpressions) == 0 || !sel.Matches(set) {
						continue
					}
					ingressRules = append(ingressRules, pol.Spec.Ingress...)
					egress = egress || len(pol.Spec.Egress) > 0
				}
				app := p.Labels["app"]
				if app != "setflow-migrate" && app != "setflow-codec-server" && !egress {
					t.Errorf("%s: no egress allowed beyond DNS", name)
				}
				for _, r := range ingressRules {
					for _, from := range r.From {
						if from.IPBlock != nil && from.IPBlock.CIDR == "0.0.0.0/0" {
							t.Errorf("%s: ingress from anywhere", name)
						}
					}
				}
				switch app {
				case "setflow-ingress":
					if !slices.ContainsFunc(ingressRules, func(r networkingv1.NetworkPolicyIngressRule) bool {
						return len(r.Ports) == 1 && r.Ports[0].Port.IntValue() == 8080 && len(r.From) > 0
					}) {
						t.Errorf("%s: no rule admitting the load balancer on 8080", name)
					}
				case "setflow-codec-server":
					codecCallers(t, name, ingressRules)
				}
			}
		})
	}
}

// codecCallers checks that the codec server admits only the Temporal UI's
// pods on its codec port and Prometheus on its metrics port.
func codecCallers(t *testing.T, name string, rules []networkingv1.NetworkPolicyIngressRule) {
	t.Helper()
	ui, prom := false, false
	for _, r := range rules {
		if len(r.Ports) != 1 || len(r.From) == 0 {
			t.Errorf("%s: a rule admits %d ports from %d sources, want one port from named pods", name, len(r.Ports), len(r.From))
			continue
		}
		port := r.Ports[0].Port.IntValue()
		for _, from := range r.From {
			var pods map[string]string
			if from.PodSelector != nil {
				pods = from.PodSelector.MatchLabels
			}
			switch {
			case port == 8081 && pods["app.kubernetes.io/component"] == "web":
				ui = true
			case port == 9090 && pods["app.kubernetes.io/name"] == "prometheus":
				prom = true
			default:
				t.Errorf("%s: admits %+v on %d; only the Temporal UI (8081) and Prometheus (9090) may call it", name, from, port)
			}
		}
	}
	if !ui || !prom {
		t.Errorf("%s: Temporal UI admitted %v, Prometheus admitted %v, want both", name, ui, prom)
	}
}

// metricNames lists every metric the metrics package defines.
func metricNames(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	ch := make(chan *prometheus.Desc, 256)
	go func() {
		for _, c := range metrics.Collectors() {
			c.Describe(ch)
		}
		close(ch)
	}()
	for d := range ch {
		if m := fq.FindStringSubmatch(d.String()); m != nil {
			names[m[1]] = true
		}
	}
	return names
}

// TestAlertsHaveRunbooksAndKnownMetrics: every alert has a severity, a
// runbook link to a section that exists in docs/operations.md, and names
// only setflow_ metrics that setflow exports; the rules cover the alerts
// the runbook promises.
func TestAlertsHaveRunbooksAndKnownMetrics(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "#") {
			anchors[githubAnchor(strings.TrimLeft(line, "# "))] = true
		}
	}
	known := metricNames(t)
	used := regexp.MustCompile(`setflow_[a-z0-9_]+`)
	seen := map[string]bool{}
	for _, o := range render(t, "overlays/prod") {
		rules, ok := o.obj.(*monitoringv1.PrometheusRule)
		if !ok {
			continue
		}
		for _, g := range rules.Spec.Groups {
			for _, r := range g.Rules {
				if r.Alert == "" {
					continue
				}
				seen[r.Alert] = true
				if r.Labels["severity"] == "" {
					t.Errorf("%s: no severity", r.Alert)
				}
				link := r.Annotations["runbook_url"]
				_, anchor, _ := strings.Cut(link, "docs/operations.md#")
				if anchor == "" || !anchors[anchor] {
					t.Errorf("%s: runbook_url %q names no section of docs/operations.md", r.Alert, link)
				}
				for _, m := range used.FindAllString(r.Expr.String(), -1) {
					if !known[m] && !known[strings.TrimSuffix(m, "_total")] {
						t.Errorf("%s: metric %s is not exported by setflow", r.Alert, m)
					}
				}
			}
		}
	}
	for _, want := range []string{"SetflowStepsFailing", "SetflowParkedEvents", "SetflowBacklogOld", "SetflowIngress5xx",
		"SetflowWebhookSilent", "SetflowWebhook4xxBurst", "SetflowCodecDecodeFailing", "SetflowCodecUnauthorized"} {
		if !seen[want] {
			t.Errorf("no alert %s", want)
		}
	}
}

// githubAnchor is the id GitHub gives a Markdown heading.
func githubAnchor(h string) string {
	var b bytes.Buffer
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9'):
			b.WriteRune(r)
		}
	}
	return b.String()
}
