package validate

// kubeconform would check these manifests against the Kubernetes JSON
// schemas, but it downloads them from GitHub, which this project's machines
// and CI cannot reach. Strict decoding into the k8s.io/api types, with the
// API server's own decoder, catches the same class of mistake offline: an
// unknown or misspelt field, a value of the wrong type, a duplicate key, a
// malformed quantity. The cross-reference checks below go further than a
// schema can.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	sigsyaml "sigs.k8s.io/yaml"
)

const kubernetesDir = "../kubernetes"

// manifests are the objects `kubectl apply -k deploy/kubernetes` creates.
type manifests struct {
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
}

// newDecoder returns the API machinery's strict decoder for the kinds the
// examples use: unknown fields and duplicate keys are errors. A kind it does
// not know is an error too; add its group's AddToScheme here.
func newDecoder(tb testing.TB) runtime.Decoder {
	tb.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme} {
		if err := add(scheme); err != nil {
			tb.Fatal(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}

// decodeDocuments strictly decodes every YAML document in data. Empty
// documents (only comments) are skipped.
func decodeDocuments(dec runtime.Decoder, data []byte) ([]runtime.Object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []runtime.Object
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if j, err := sigsyaml.YAMLToJSON(doc); err == nil && string(j) == "null" {
			continue
		}
		obj, _, err := dec.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		objs = append(objs, obj)
	}
}

// objectID names an object as kind/name.
func objectID(obj runtime.Object) string {
	m, err := metaOf(obj)
	if err != nil {
		return fmt.Sprintf("%T", obj)
	}
	return obj.GetObjectKind().GroupVersionKind().Kind + "/" + m.Name
}

func metaOf(obj runtime.Object) (*metav1.ObjectMeta, error) {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		return &o.ObjectMeta, nil
	case *corev1.Service:
		return &o.ObjectMeta, nil
	case *corev1.ConfigMap:
		return &o.ObjectMeta, nil
	case *corev1.Secret:
		return &o.ObjectMeta, nil
	}
	return nil, fmt.Errorf("kind %s is not checked by this test: add it", obj.GetObjectKind().GroupVersionKind().Kind)
}

// mustLoadKubernetes checks the kustomization and the files it lists, builds
// it as `kubectl kustomize` does (offline, from disk), and returns the built
// objects, each decoded strictly.
func mustLoadKubernetes(t *testing.T) *manifests {
	t.Helper()
	dec := newDecoder(t)

	// The kustomization, strictly: a misspelt key would otherwise be
	// ignored by this check (kustomize itself refuses it too).
	data, err := os.ReadFile(filepath.Join(kubernetesDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kusttypes.Kustomization
	if err := sigsyaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.Kind != kusttypes.KustomizationKind || k.APIVersion != kusttypes.KustomizationVersion {
		t.Errorf("kustomization.yaml: %s %s, want %s %s", k.APIVersion, k.Kind, kusttypes.KustomizationVersion, kusttypes.KustomizationKind)
	}

	// Every manifest file is listed, and every listed file is a manifest
	// here: no remote bases, nothing forgotten.
	var files []string
	for _, pattern := range []string{"*.yaml", "*.yml"} {
		m, err := filepath.Glob(filepath.Join(kubernetesDir, pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range m {
			if b := filepath.Base(f); b != "kustomization.yaml" {
				files = append(files, b)
			}
		}
	}
	slices.Sort(files)
	listed := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(files, listed) {
		t.Errorf("kustomization.yaml resources = %q, want the YAML files beside it, %q", listed, files)
	}

	// Each file on its own, so that an error names it.
	var want []string
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(kubernetesDir, f))
		if err != nil {
			t.Fatal(err)
		}
		objs, err := decodeDocuments(dec, data)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		for _, o := range objs {
			want = append(want, objectID(o))
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// What is applied: the built kustomization, decoded again (kustomize
	// keeps fields it does not know, so this is where its output is
	// checked).
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), kubernetesDir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", kubernetesDir, err)
	}
	m := &manifests{configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{}}
	var got []string
	for _, res := range rm.Resources() {
		y, err := res.AsYAML()
		if err != nil {
			t.Fatalf("kustomize build: %s: %v", res.CurId(), err)
		}
		objs, err := decodeDocuments(dec, y)
		if err != nil || len(objs) != 1 {
			t.Fatalf("kustomize build: %s: %d objects, %v", res.CurId(), len(objs), err)
		}
		obj := objs[0]
		got = append(got, objectID(obj))
		meta, err := metaOf(obj)
		if err != nil {
			t.Fatal(err)
		}
		checkMeta(t, objectID(obj), meta)
		switch o := obj.(type) {
		case *appsv1.Deployment:
			m.deployments = append(m.deployments, o)
		case *corev1.Service:
			m.services = append(m.services, o)
		case *corev1.ConfigMap:
			m.configMaps[o.Name] = o
		case *corev1.Secret:
			m.secrets[o.Name] = o
		}
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("kustomize build = %q, want the files' objects %q", got, want)
	}
	return m
}

// checkMeta checks names, labels and annotations as the API server would.
func checkMeta(t *testing.T, id string, m *metav1.ObjectMeta) {
	for _, msg := range validation.IsDNS1123Subdomain(m.Name) {
		t.Errorf("%s: name: %s", id, msg)
	}
	for k, v := range m.Labels {
		for _, msg := range validation.IsQualifiedName(k) {
			t.Errorf("%s: label %q: %s", id, k, msg)
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			t.Errorf("%s: label %q value %q: %s", id, k, v, msg)
		}
	}
	for k := range m.Annotations {
		for _, msg := range validation.IsQualifiedName(k) {
			t.Errorf("%s: annotation %q: %s", id, k, msg)
		}
	}
}

func TestKubernetes(t *testing.T) {
	m := mustLoadKubernetes(t)
	img := mustReadDockerfile(t)

	t.Run("pods", func(t *testing.T) {
		for _, d := range m.deployments {
			m.checkDeployment(t, d)
		}
	})
	t.Run("services", func(t *testing.T) {
		for _, s := range m.services {
			m.checkService(t, s)
		}
	})
	t.Run("secrets", func(t *testing.T) {
		// The examples are committed: a Secret there holds placeholders
		// only, marked so that nobody mistakes one for a real value.
		for _, s := range m.secrets {
			for k, v := range s.StringData {
				if !strings.Contains(v, "REPLACE_ME") {
					t.Errorf("Secret/%s: %s = %q, want a placeholder containing REPLACE_ME", s.Name, k, v)
				}
			}
			for k := range s.Data {
				t.Errorf("Secret/%s: %s is in data; use stringData with a REPLACE_ME placeholder", s.Name, k)
			}
		}
	})
	t.Run("sluice", func(t *testing.T) {
		var found int
		for _, d := range m.deployments {
			spec := &d.Spec.Template.Spec
			for i := range spec.InitContainers {
				if isSluiceImage(spec.InitContainers[i].Image) {
					found++
					m.checkSluice(t, d, &spec.InitContainers[i], true, img)
				}
			}
			for i := range spec.Containers {
				if isSluiceImage(spec.Containers[i].Image) {
					found++
					m.checkSluice(t, d, &spec.Containers[i], false, img)
				}
			}
		}
		if found != 1 {
			t.Errorf("%d Sluice containers, want 1 (the app's sidecar)", found)
		}
	})
}

// isSluiceImage reports whether an image reference names a "sluice"
// repository, whatever its registry and tag.
func isSluiceImage(ref string) bool {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return path.Base(ref) == "sluice"
}

// allContainers lists a pod's init containers (sidecars included), then its
// containers.
func allContainers(spec *corev1.PodSpec) []*corev1.Container {
	var cs []*corev1.Container
	for i := range spec.InitContainers {
		cs = append(cs, &spec.InitContainers[i])
	}
	for i := range spec.Containers {
		cs = append(cs, &spec.Containers[i])
	}
	return cs
}

// resolvePort finds a port given by number or by name among a container's
// ports.
func resolvePort(ports []corev1.ContainerPort, p intstr.IntOrString) (int32, bool) {
	for _, cp := range ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

// probePort returns the port a probe checks, and its HTTP path.
func probePort(pr *corev1.Probe) (port intstr.IntOrString, httpPath string, ok bool) {
	switch {
	case pr.HTTPGet != nil:
		return pr.HTTPGet.Port, pr.HTTPGet.Path, true
	case pr.TCPSocket != nil:
		return pr.TCPSocket.Port, "", true
	case pr.GRPC != nil:
		return intstr.FromInt32(pr.GRPC.Port), "", true
	}
	return intstr.IntOrString{}, "", false
}

func (m *manifests) checkDeployment(t *testing.T, d *appsv1.Deployment) {
	id := "Deployment/" + d.Name
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() {
		t.Errorf("%s: selector %v: %v", id, d.Spec.Selector, err)
	} else if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("%s: selector %s does not match the pod template's labels %v", id, sel, d.Spec.Template.Labels)
	}

	spec := &d.Spec.Template.Spec
	volumes := map[string]*corev1.Volume{}
	for i := range spec.Volumes {
		v := &spec.Volumes[i]
		volumes[v.Name] = v
		for _, msg := range validation.IsDNS1123Label(v.Name) {
			t.Errorf("%s: volume %q: %s", id, v.Name, msg)
		}
		if cm := v.ConfigMap; cm != nil {
			m.checkKeys(t, id, "ConfigMap", cm.Name, cm.Items, cm.Optional)
		}
		if s := v.Secret; s != nil {
			m.checkKeys(t, id, "Secret", s.SecretName, s.Items, s.Optional)
		}
	}

	names := map[string]bool{}
	for _, c := range allContainers(spec) {
		cid := id + " container " + c.Name
		if names[c.Name] {
			t.Errorf("%s: duplicate container name", cid)
		}
		names[c.Name] = true
		for _, msg := range validation.IsDNS1123Label(c.Name) {
			t.Errorf("%s: name: %s", cid, msg)
		}
		for _, p := range c.Ports {
			for _, msg := range validation.IsValidPortNum(int(p.ContainerPort)) {
				t.Errorf("%s: port %d: %s", cid, p.ContainerPort, msg)
			}
			if p.Name != "" {
				for _, msg := range validation.IsValidPortName(p.Name) {
					t.Errorf("%s: port name %q: %s", cid, p.Name, msg)
				}
			}
		}
		for _, pr := range []struct {
			kind  string
			probe *corev1.Probe
		}{{"startupProbe", c.StartupProbe}, {"readinessProbe", c.ReadinessProbe}, {"livenessProbe", c.LivenessProbe}} {
			if pr.probe == nil {
				continue
			}
			if port, _, ok := probePort(pr.probe); ok {
				if _, ok := resolvePort(c.Ports, port); !ok {
					t.Errorf("%s: %s port %s is not one of the container's ports", cid, pr.kind, port.String())
				}
			}
		}
		for _, vm := range c.VolumeMounts {
			if volumes[vm.Name] == nil {
				t.Errorf("%s: mounts volume %q, which the pod does not have", cid, vm.Name)
			}
		}
		if _, errs := m.containerEnv(c); len(errs) > 0 {
			for _, err := range errs {
				t.Errorf("%s: %v", cid, err)
			}
		}
		if c.RestartPolicy != nil && *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Errorf("%s: restartPolicy %s; only sidecars (Always) are expected", cid, *c.RestartPolicy)
		}
		checkSecurity(t, cid, spec.SecurityContext, c)
		checkResources(t, cid, c)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken is not false, but nothing here talks to the API server", id)
	}
}

// checkKeys checks that a volume's ConfigMap or Secret exists (unless
// optional) and holds the keys the volume projects.
func (m *manifests) checkKeys(t *testing.T, id, kind, name string, items []corev1.KeyToPath, optional *bool) {
	t.Helper()
	keys, ok := m.keys(kind, name)
	if !ok {
		if optional == nil || !*optional {
			t.Errorf("%s: mounts %s %q, which is not in the manifests", id, kind, name)
		}
		return
	}
	for _, it := range items {
		if !keys[it.Key] {
			t.Errorf("%s: mounts key %q of %s %q, which it does not have", id, it.Key, kind, name)
		}
	}
}

// keys returns the keys of a ConfigMap or Secret.
func (m *manifests) keys(kind, name string) (map[string]bool, bool) {
	keys := map[string]bool{}
	switch kind {
	case "ConfigMap":
		cm, ok := m.configMaps[name]
		if !ok {
			return nil, false
		}
		for k := range cm.Data {
			keys[k] = true
		}
		for k := range cm.BinaryData {
			keys[k] = true
		}
	case "Secret":
		s, ok := m.secrets[name]
		if !ok {
			return nil, false
		}
		for k := range s.Data {
			keys[k] = true
		}
		for k := range s.StringData {
			keys[k] = true
		}
	}
	return keys, true
}

// value returns one key of a ConfigMap or Secret, as the container sees it.
func (m *manifests) value(kind, name, key string) (string, bool) {
	switch kind {
	case "ConfigMap":
		if cm, ok := m.configMaps[name]; ok {
			if v, ok := cm.Data[key]; ok {
				return v, true
			}
		}
	case "Secret":
		if s, ok := m.secrets[name]; ok {
			if v, ok := s.StringData[key]; ok { // stringData wins over data, as in the API server
				return v, true
			}
			if v, ok := s.Data[key]; ok {
				return string(v), true
			}
		}
	}
	return "", false
}

// envSource says where a container's variable comes from.
type envSource int

const (
	fromLiteral envSource = iota
	fromSecret
	fromConfigMap
	fromField
)

// containerEnv resolves a container's environment as the kubelet would from
// the manifests' ConfigMaps and Secrets. A reference to a missing object or
// key is an error (unless marked optional).
func (m *manifests) containerEnv(c *corev1.Container) (map[string]envValue, []error) {
	env := map[string]envValue{}
	var errs []error
	for _, ef := range c.EnvFrom {
		kind, name, optional := "ConfigMap", "", (*bool)(nil)
		src := fromConfigMap
		switch {
		case ef.ConfigMapRef != nil:
			name, optional = ef.ConfigMapRef.Name, ef.ConfigMapRef.Optional
		case ef.SecretRef != nil:
			kind, name, optional, src = "Secret", ef.SecretRef.Name, ef.SecretRef.Optional, fromSecret
		}
		keys, ok := m.keys(kind, name)
		if !ok {
			if optional == nil || !*optional {
				errs = append(errs, fmt.Errorf("envFrom %s %q is not in the manifests", kind, name))
			}
			continue
		}
		for k := range keys {
			v, _ := m.value(kind, name, k)
			env[ef.Prefix+k] = envValue{v, src}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = envValue{e.Value, fromLiteral}
		case e.ValueFrom.SecretKeyRef != nil:
			r := e.ValueFrom.SecretKeyRef
			v, ok := m.value("Secret", r.Name, r.Key)
			if !ok && (r.Optional == nil || !*r.Optional) {
				errs = append(errs, fmt.Errorf("env %s: Secret %q has no key %q in the manifests", e.Name, r.Name, r.Key))
			}
			env[e.Name] = envValue{v, fromSecret}
		case e.ValueFrom.ConfigMapKeyRef != nil:
			r := e.ValueFrom.ConfigMapKeyRef
			v, ok := m.value("ConfigMap", r.Name, r.Key)
			if !ok && (r.Optional == nil || !*r.Optional) {
				errs = append(errs, fmt.Errorf("env %s: ConfigMap %q has no key %q in the manifests", e.Name, r.Name, r.Key))
			}
			env[e.Name] = envValue{v, fromConfigMap}
		default: // fieldRef, resourceFieldRef: known only in the cluster
			env[e.Name] = envValue{"", fromField}
		}
	}
	return env, errs
}

// envValue is one resolved environment variable.
type envValue struct {
	value  string
	source envSource
}

// checkSecurity requires what every container of the examples does: a
// numeric non-root user, a read-only root filesystem, no privilege
// escalation, no capabilities, the runtime's default seccomp profile.
func checkSecurity(t *testing.T, id string, pod *corev1.PodSecurityContext, c *corev1.Container) {
	if pod == nil {
		pod = &corev1.PodSecurityContext{}
	}
	sc := c.SecurityContext
	if sc == nil {
		sc = &corev1.SecurityContext{}
	}
	nonRoot := cmpOr(sc.RunAsNonRoot, pod.RunAsNonRoot)
	if nonRoot == nil || !*nonRoot {
		t.Errorf("%s: runAsNonRoot is not true", id)
	}
	if uid := cmpOr(sc.RunAsUser, pod.RunAsUser); uid == nil || *uid == 0 {
		t.Errorf("%s: no non-zero runAsUser (runAsNonRoot cannot check an image's user given by name)", id)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem is not true", id)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation is not false", id)
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		t.Errorf("%s: capabilities must drop ALL and add none", id)
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = pod.SeccompProfile
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: seccompProfile is not RuntimeDefault", id)
	}
}

// cmpOr returns the first non-nil pointer.
func cmpOr[T any](ps ...*T) *T {
	for _, p := range ps {
		if p != nil {
			return p
		}
	}
	return nil
}

// checkResources requires CPU and memory requests and limits, each request
// within its limit.
func checkResources(t *testing.T, id string, c *corev1.Container) {
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, hasReq := c.Resources.Requests[r]
		lim, hasLim := c.Resources.Limits[r]
		if !hasReq || !hasLim || req.IsZero() || lim.IsZero() {
			t.Errorf("%s: %s needs both a request and a limit", id, r)
			continue
		}
		if req.Cmp(lim) > 0 {
			t.Errorf("%s: %s request %s is above its limit %s", id, r, req.String(), lim.String())
		}
	}
}

// checkService checks that a Service selects the pods of exactly one
// Deployment and that its target ports are ports of those pods.
func (m *manifests) checkService(t *testing.T, s *corev1.Service) {
	id := "Service/" + s.Name
	for _, msg := range validation.IsDNS1035Label(s.Name) {
		t.Errorf("%s: name: %s", id, msg)
	}
	d := m.selected(s)
	if d == nil {
		t.Errorf("%s: selector %v matches the pods of no Deployment (or of several)", id, s.Spec.Selector)
		return
	}
	var ports []corev1.ContainerPort
	for _, c := range d.Spec.Template.Spec.Containers {
		ports = append(ports, c.Ports...)
	}
	for _, p := range s.Spec.Ports {
		target := p.TargetPort
		if target.Type == intstr.Int && target.IntVal == 0 {
			target = intstr.FromInt32(p.Port)
		}
		if _, ok := resolvePort(ports, target); !ok {
			t.Errorf("%s: port %d targets %s, which no container of Deployment/%s declares", id, p.Port, target.String(), d.Name)
		}
	}
}

// selected returns the one Deployment whose pods a Service selects.
func (m *manifests) selected(s *corev1.Service) *appsv1.Deployment {
	if len(s.Spec.Selector) == 0 {
		return nil
	}
	sel := labels.SelectorFromSet(s.Spec.Selector)
	var found *appsv1.Deployment
	for _, d := range m.deployments {
		if sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			if found != nil {
				return nil
			}
			found = d
		}
	}
	return found
}

// service returns the Service a host name in the pod's namespace resolves to
// ("redis", or "redis.NAMESPACE.svc...").
func (m *manifests) service(host string) *corev1.Service {
	name, _, _ := strings.Cut(host, ".")
	for _, s := range m.services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// checkSluice checks the Sluice sidecar against its config, the Dockerfile
// and the rest of the pod.
func (m *manifests) checkSluice(t *testing.T, d *appsv1.Deployment, c *corev1.Container, init bool, img runtimeImage) {
	id := "Deployment/" + d.Name + " container " + c.Name
	spec := &d.Spec.Template.Spec

	// A native sidecar: started before the app, stopped after it.
	if init && (c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways) {
		t.Errorf("%s: an init container without restartPolicy: Always would block the app until it exits", id)
	}

	// The image's entrypoint is the binary; the container gives its
	// arguments.
	if len(c.Command) > 0 {
		t.Errorf("%s: command %q replaces the image's entrypoint %q; give args only", id, c.Command, img.entrypoint)
	}
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Errorf("%s: args %q, want serve -config ...", id, c.Args)
	}
	if uid := ptrOr(cmpOr(securityUser(c), specUser(spec)), 0); uid != img.uid {
		t.Errorf("%s: runAsUser %d, want the Dockerfile's user, uid %d", id, uid, img.uid)
	}

	// The config, from the ConfigMap mounted where -config points.
	cfgPath := configFlag(c.Args)
	if !filepath.IsAbs(cfgPath) {
		t.Fatalf("%s: -config %q, want an absolute path on a ConfigMap volume", id, cfgPath)
	}
	text, ok := m.mountedConfigMapFile(t, id, spec, c, cfgPath)
	if !ok {
		t.FailNow()
	}
	env, _ := m.containerEnv(c)
	plain := map[string]string{}
	for k, v := range env {
		plain[k] = v.value
	}
	for _, name := range referencedVars(text) {
		if secretish(name) && env[name].source != fromSecret {
			t.Errorf("%s: ${%s} in the config must come from a Secret (secretKeyRef or envFrom secretRef)", id, name)
		}
	}
	cfg := mustLoadSluiceConfig(t, "ConfigMap file "+cfgPath, text, plain)

	// The app reaches the proxy over the pod's loopback.
	host, proxyPort, err := splitListen(cfg.Listen)
	if err != nil || !isLoopback(host) {
		t.Errorf("%s: listen %q, want a loopback address: only the pod's own containers may use the provider key it adds", id, cfg.Listen)
	}
	wantBase := "http://" + cfg.Listen + "/v1"
	var clients int
	for _, o := range spec.Containers {
		if o.Name == c.Name {
			continue
		}
		oenv, _ := m.containerEnv(&o)
		if v, ok := oenv["OPENAI_BASE_URL"]; ok {
			clients++
			if v.value != wantBase {
				t.Errorf("Deployment/%s container %s: OPENAI_BASE_URL = %q, want %q (Sluice's listen)", d.Name, o.Name, v.value, wantBase)
			}
		}
	}
	if clients == 0 {
		t.Errorf("Deployment/%s: no app container sets OPENAI_BASE_URL to %s", d.Name, wantBase)
	}
	for _, p := range c.Ports {
		if p.ContainerPort == proxyPort {
			t.Errorf("%s: declares the proxy port %d, which listens on loopback only", id, proxyPort)
		}
	}

	// The admin listener: probes and Prometheus reach it on the pod IP.
	adminHost, adminPort, err := splitListen(cfg.Admin.Listen)
	if err != nil {
		t.Fatalf("%s: admin.listen: %v", id, err)
	}
	if isLoopback(adminHost) {
		t.Errorf("%s: admin.listen %q is loopback: the kubelet's probes and Prometheus use the pod IP", id, cfg.Admin.Listen)
	}
	if cfg.Admin.Token.Reveal() == "" {
		t.Errorf("%s: admin.token is empty", id)
	}
	for _, p := range []struct {
		kind  string
		probe *corev1.Probe
		paths []string
	}{
		{"readinessProbe", c.ReadinessProbe, []string{"/readyz"}},
		{"livenessProbe", c.LivenessProbe, []string{"/healthz"}},
		{"startupProbe", c.StartupProbe, []string{"/readyz", "/healthz"}},
	} {
		if p.probe == nil {
			if p.kind != "startupProbe" {
				t.Errorf("%s: no %s", id, p.kind)
			}
			continue
		}
		port, httpPath, _ := probePort(p.probe)
		if n, ok := resolvePort(c.Ports, port); !ok || n != adminPort || !slices.Contains(p.paths, httpPath) {
			t.Errorf("%s: %s checks port %s path %q, want the admin port %d and %s", id, p.kind, port.String(), httpPath, adminPort, strings.Join(p.paths, " or "))
		}
	}
	ann := d.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != fmt.Sprint(adminPort) || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("Deployment/%s: pod annotations %v, want prometheus.io/scrape \"true\", port %q, path /metrics", d.Name, ann, fmt.Sprint(adminPort))
	}

	// Shared mode through the Redis Service, with one replica per
	// expected_replicas.
	if !cfg.SharedMode() || cfg.Redis.URL == "" {
		t.Errorf("%s: not in shared mode with redis.url", id)
	} else if u, err := url.Parse(cfg.Redis.URL); err == nil {
		port := orDefault(u.Port(), "6379")
		s := m.service(u.Hostname())
		switch {
		case s == nil:
			t.Errorf("%s: redis.url host %q is not a Service in the manifests", id, u.Hostname())
		case !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return fmt.Sprint(p.Port) == port }):
			t.Errorf("%s: redis.url port %s is not a port of Service/%s", id, port, s.Name)
		}
	}
	if replicas := ptrOr(d.Spec.Replicas, 1); int(replicas) != cfg.Redis.ExpectedReplicas {
		t.Errorf("%s: redis.expected_replicas = %d, want the Deployment's replicas, %d", id, cfg.Redis.ExpectedReplicas, replicas)
	}

	// The spool, the only file Sluice writes, on a writable volume.
	m.checkSpool(t, id, spec, c, cfg.DeadLetter.File)

	// Termination: the preStop sleeps and Sluice's drain fit in the grace
	// period (native sidecar: the app's preStop and shutdown come first,
	// then Sluice's SIGTERM and drain).
	grace := time.Duration(ptrOr(spec.TerminationGracePeriodSeconds, corev1.DefaultTerminationGracePeriodSeconds)) * time.Second
	var sleeps time.Duration
	for _, o := range allContainers(spec) {
		sidecar := o.RestartPolicy != nil && *o.RestartPolicy == corev1.ContainerRestartPolicyAlways
		var pre *corev1.LifecycleHandler
		if o.Lifecycle != nil {
			pre = o.Lifecycle.PreStop
		}
		switch {
		case pre == nil && !sidecar:
			t.Errorf("Deployment/%s container %s: no preStop sleep to let endpoints drop the pod before SIGTERM", d.Name, o.Name)
		case pre == nil:
		case pre.Sleep == nil:
			t.Errorf("Deployment/%s container %s: preStop is not a sleep action, so its length cannot be budgeted", d.Name, o.Name)
		default:
			sleeps += time.Duration(pre.Sleep.Seconds) * time.Second
		}
	}
	if grace <= sleeps+cfg.ShutdownGrace {
		t.Errorf("Deployment/%s: terminationGracePeriodSeconds %v, want more than the preStop sleeps (%v) plus shutdown_grace (%v)", d.Name, grace, sleeps, cfg.ShutdownGrace)
	}

	// GOMEMLIMIT, when set, is below the memory limit.
	if v, ok := env["GOMEMLIMIT"]; ok {
		soft, err := resource.ParseQuantity(strings.TrimSuffix(v.value, "B"))
		lim := c.Resources.Limits[corev1.ResourceMemory]
		if err != nil || soft.Cmp(lim) >= 0 {
			t.Errorf("%s: GOMEMLIMIT %q, want a size below the memory limit %s", id, v.value, lim.String())
		}
	}
}

func securityUser(c *corev1.Container) *int64 {
	if c.SecurityContext == nil {
		return nil
	}
	return c.SecurityContext.RunAsUser
}

func specUser(s *corev1.PodSpec) *int64 {
	if s.SecurityContext == nil {
		return nil
	}
	return s.SecurityContext.RunAsUser
}

func ptrOr[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// mountedConfigMapFile returns the text of the file at p in container c, which
// must come from a ConfigMap volume.
func (m *manifests) mountedConfigMapFile(t *testing.T, id string, spec *corev1.PodSpec, c *corev1.Container, p string) (string, bool) {
	t.Helper()
	for _, vm := range c.VolumeMounts {
		var key string
		switch {
		case vm.SubPath == "" && filepath.Dir(p) == filepath.Clean(vm.MountPath):
			key = filepath.Base(p)
		case vm.SubPath != "" && p == filepath.Clean(vm.MountPath):
			key = vm.SubPath
		default:
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name != vm.Name {
				continue
			}
			if v.ConfigMap == nil {
				t.Errorf("%s: %s is on volume %q, which is not a ConfigMap", id, p, v.Name)
				return "", false
			}
			for _, it := range v.ConfigMap.Items {
				if it.Path == key {
					key = it.Key
				}
			}
			text, ok := m.value("ConfigMap", v.ConfigMap.Name, key)
			if !ok {
				t.Errorf("%s: %s: ConfigMap %q has no key %q", id, p, v.ConfigMap.Name, key)
			}
			return text, ok
		}
	}
	t.Errorf("%s: no volume mount provides %s", id, p)
	return "", false
}

// checkSpool checks that the dead-letter file is on a writable volume: the
// root filesystem is read-only.
func (m *manifests) checkSpool(t *testing.T, id string, spec *corev1.PodSpec, c *corev1.Container, file string) {
	if !filepath.IsAbs(file) {
		t.Errorf("%s: deadletter.file %q is relative to the image's working directory, on the read-only root filesystem", id, file)
		return
	}
	var best *corev1.VolumeMount
	for i, vm := range c.VolumeMounts {
		if under(file, vm.MountPath) && (best == nil || len(vm.MountPath) > len(best.MountPath)) {
			best = &c.VolumeMounts[i]
		}
	}
	if best == nil {
		t.Errorf("%s: deadletter.file %s is on no volume (the root filesystem is read-only)", id, file)
		return
	}
	if best.ReadOnly {
		t.Errorf("%s: deadletter.file %s is on read-only mount %s", id, file, best.MountPath)
	}
	for _, v := range spec.Volumes {
		if v.Name == best.Name && v.EmptyDir == nil && v.PersistentVolumeClaim == nil && v.Ephemeral == nil {
			t.Errorf("%s: deadletter.file %s is on volume %q, which is not an emptyDir or a claim", id, file, v.Name)
		}
	}
}
