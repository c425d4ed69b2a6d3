package validate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-ai/sluice/config"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	sigsyaml "sigs.k8s.io/yaml"
)

// The checks above pass on the examples; these show that the decoders they
// rely on refuse the mistakes they are meant to catch, so that a green run
// means something.

const deploymentDoc = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: 2
  selector:
    matchLabels: {app: x}
  template:
    metadata:
      labels: {app: x}
    spec:
      containers:
        - name: app
          image: example
          resources:
            limits: {memory: 64Mi}
`

func TestKubernetesDecoderIsStrict(t *testing.T) {
	dec := newDecoder(t)
	tests := []struct {
		name    string
		doc     string
		wantErr string // "" means the document must decode
	}{
		{"valid", deploymentDoc, ""},
		{"comment-only document skipped", "# nothing\n---\n" + deploymentDoc, ""},
		{"misspelt spec field", strings.Replace(deploymentDoc, "replicas: 2", "replica: 2", 1), `unknown field "spec.replica"`},
		{"misspelt container field", strings.Replace(deploymentDoc, "image: example", "image: example\n          imagePullPolicies: Always", 1), `unknown field "spec.template.spec.containers[0].imagePullPolicies"`},
		{"duplicate key", strings.Replace(deploymentDoc, "replicas: 2", "replicas: 2\n  replicas: 3", 1), `key "replicas" already set`},
		{"wrong type", strings.Replace(deploymentDoc, "replicas: 2", "replicas: two", 1), "replicas"},
		{"bad quantity", strings.Replace(deploymentDoc, "64Mi", "64MB!", 1), "quantit"},
		{"unknown kind", strings.Replace(deploymentDoc, "kind: Deployment", "kind: Deploymnet", 1), "Deploymnet"},
		{"unknown kind in a later document", deploymentDoc + "---\napiVersion: v1\nkind: ConfigMapp\nmetadata: {name: x}\n", "document 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeDocuments(dec, []byte(tt.doc))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("decodeDocuments = %v, want no error", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("decodeDocuments = nil, want an error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("decodeDocuments = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestKustomizationDecodingIsStrict(t *testing.T) {
	var k kusttypes.Kustomization
	err := sigsyaml.UnmarshalStrict([]byte("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresource:\n  - a.yaml\n"), &k)
	if err == nil || !strings.Contains(err.Error(), `unknown field "resource"`) {
		t.Fatalf("UnmarshalStrict(resource:) = %v, want an unknown field error", err)
	}
}

func TestComposeLoaderIsStrict(t *testing.T) {
	const valid = `services:
  sidecar:
    image: sluice:dev
    read_only: true
  app:
    image: app
    network_mode: service:sidecar
`
	tests := []struct {
		name    string
		file    string
		wantErr string
	}{
		{"valid", valid, ""},
		{"misspelt key", strings.Replace(valid, "read_only", "read-only", 1), "read-only"},
		{"network_mode names no service", strings.Replace(valid, "service:sidecar", "service:sidecr", 1), "sidecr"},
		{"undeclared named volume", valid + "    volumes: [spool:/data]\n", "spool"},
		{"wrong type", strings.Replace(valid, "read_only: true", "read_only: [yes]", 1), "read_only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "compose.yml")
			if err := os.WriteFile(path, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := loadCompose(t.Context(), path)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("loadCompose = %v, want no error", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("loadCompose = nil, want an error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("loadCompose = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestSluiceConfigCheckRefusesTypos(t *testing.T) {
	// The same path the examples' configs take: an unknown key is an error
	// that names it, as `sluice check` reports it.
	path := filepath.Join(t.TempDir(), "config.yaml")
	text := "providers:\n  - name: openai\n    base_url: https://api.openai.com\n    api_kye: x\n"
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(path); err == nil || !strings.Contains(err.Error(), "api_kye") {
		t.Fatalf("config.Load(api_kye) = %v, want an error naming api_kye", err)
	}
}
