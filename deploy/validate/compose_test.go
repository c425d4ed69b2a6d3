package validate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	sigsyaml "sigs.k8s.io/yaml"
)

const composeDir = "../compose"

// loadCompose loads a Compose file as `docker compose config` does, with
// compose-go, the library Docker Compose itself uses: interpolation (with no
// variables set, so the file's defaults apply), validation against the
// Compose specification's JSON schema (an unknown or misspelt key is an
// error), and the consistency checks (network_mode: service:X and
// depends_on name services that exist, named volumes are declared).
func loadCompose(ctx context.Context, file string) (*types.Project, error) {
	opts, err := cli.NewProjectOptions([]string{file},
		cli.WithWorkingDirectory(filepath.Dir(file)),
		cli.WithResolvedPaths(true))
	if err != nil {
		return nil, err
	}
	return opts.LoadProject(ctx)
}

func TestCompose(t *testing.T) {
	p, err := loadCompose(t.Context(), filepath.Join(composeDir, "docker-compose.yml"))
	if err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	img := mustReadDockerfile(t)
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}

	// The sidecars: the services built from the repository's Dockerfile.
	var sidecars []string
	for name, s := range p.Services {
		if s.Build != nil {
			sidecars = append(sidecars, name)
		}
	}
	slices.Sort(sidecars)
	if len(sidecars) != 2 {
		t.Fatalf("services built from the Dockerfile = %q, want two Sluice sidecars", sidecars)
	}

	// Not subtests: every subtest below needs all of them.
	var cfgs []*composeSluice
	for _, name := range sidecars {
		cfgs = append(cfgs, checkComposeSluice(t, p, name, root, img))
	}
	if t.Failed() {
		t.FailNow()
	}

	t.Run("apps", func(t *testing.T) {
		// One app per sidecar, in the sidecar's network namespace, so
		// that it reaches the loopback-only proxy as a pod's app does.
		for _, sc := range cfgs {
			var apps []string
			for name, s := range p.Services {
				if s.NetworkMode == "service:"+sc.service {
					apps = append(apps, name)
					want := "http://" + sc.cfgListen + "/v1"
					if v := s.Environment["OPENAI_BASE_URL"]; v == nil || *v != want {
						t.Errorf("%s: OPENAI_BASE_URL = %v, want %q", name, deref(v), want)
					}
					// Compose stops dependents first: the app, then its
					// sidecar, which then drains what the app left.
					if _, ok := s.DependsOn[sc.service]; !ok {
						t.Errorf("%s: does not depend on %s, so Compose may stop its sidecar first", name, sc.service)
					}
				}
			}
			if len(apps) != 1 {
				t.Errorf("services in %s's network namespace = %q, want one app", sc.service, apps)
			}
		}
	})

	t.Run("shared mode", func(t *testing.T) {
		for _, sc := range cfgs {
			if sc.expectedReplicas != len(cfgs) {
				t.Errorf("%s: redis.expected_replicas = %d, want the number of sidecars, %d", sc.service, sc.expectedReplicas, len(cfgs))
			}
			u, err := url.Parse(sc.redisURL)
			if err != nil || u.Hostname() == "" {
				t.Errorf("%s: redis.url %q names no host", sc.service, sc.redisURL)
				continue
			}
			r, ok := p.Services[u.Hostname()]
			if !ok {
				t.Errorf("%s: redis.url host %q is not a service", sc.service, u.Hostname())
				continue
			}
			if port := orDefault(u.Port(), "6379"); port != "6379" || slices.Contains(r.Command, "--port") {
				t.Errorf("%s: redis.url port %s, want the port the redis service listens on (6379)", sc.service, port)
			}
			if _, ok := p.Services[sc.service].DependsOn[u.Hostname()]; !ok {
				t.Errorf("%s: does not depend on %s", sc.service, u.Hostname())
			}
		}
	})

	t.Run("prometheus", func(t *testing.T) {
		checkComposePrometheus(t, p, cfgs)
	})

	t.Run("fake provider", func(t *testing.T) {
		// nginx is not here to check its config; the answers it returns
		// must at least be the JSON an OpenAI client parses.
		s, ok := p.Services["fake-openai"]
		if !ok {
			t.Fatal("no fake-openai service")
		}
		conf := bindSource(s, "/etc/nginx/conf.d/default.conf")
		data, err := os.ReadFile(conf)
		if err != nil {
			t.Fatalf("fake-openai's nginx config: %v", err)
		}
		bodies := regexp.MustCompile(`return \d+ '([^']*)';`).FindAllSubmatch(data, -1)
		if len(bodies) == 0 {
			t.Fatal("fake-openai.conf returns no bodies")
		}
		for _, b := range bodies {
			if !json.Valid(b[1]) {
				t.Errorf("fake-openai.conf: body is not JSON: %s", b[1])
			}
		}
		for _, sc := range cfgs {
			if u, err := url.Parse(sc.baseURL); err == nil && u.Hostname() == "fake-openai" {
				if _, ok := p.Services[sc.service].DependsOn["fake-openai"]; !ok {
					t.Errorf("%s: uses fake-openai without depending on it", sc.service)
				}
			}
		}
	})
}

// composeSluice is what the other checks need from one sidecar's config.
type composeSluice struct {
	service          string
	cfgListen        string
	adminPort        int32
	expectedReplicas int
	redisURL         string
	baseURL          string
}

// checkComposeSluice checks one sidecar service against the Dockerfile and
// loads its config as `sluice check` would in that container.
func checkComposeSluice(t *testing.T, p *types.Project, name, root string, img runtimeImage) *composeSluice {
	s := p.Services[name]

	if s.Build.Context != root || s.Build.Dockerfile != "Dockerfile" {
		t.Errorf("%s: build = %s %s, want the repository's Dockerfile (%s)", name, s.Build.Context, s.Build.Dockerfile, root)
	}
	if len(s.Entrypoint) > 0 {
		t.Errorf("%s: entrypoint %q replaces the image's %q", name, s.Entrypoint, img.entrypoint)
	}
	if len(s.Command) == 0 || s.Command[0] != "serve" {
		t.Errorf("%s: command %q, want serve -config ...", name, s.Command)
	}
	if uid, _, _ := strings.Cut(s.User, ":"); uid != fmt.Sprint(img.uid) {
		t.Errorf("%s: user %q, want the Dockerfile's user, uid %d", name, s.User, img.uid)
	}
	if !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") || !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
		t.Errorf("%s: read_only %v, cap_drop %q, security_opt %q: want a read-only root, ALL dropped, no-new-privileges", name, s.ReadOnly, s.CapDrop, s.SecurityOpt)
	}

	cfgPath := configFlag(s.Command)
	src := bindSource(s, cfgPath)
	if src == "" {
		t.Fatalf("%s: no bind mount provides -config %q", name, cfgPath)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatalf("%s: config: %v", name, err)
	}
	env := map[string]string{}
	for k, v := range s.Environment {
		env[k] = deref(v)
	}
	for _, v := range referencedVars(string(data)) {
		if secretish(v) && env[v] != "" && !strings.Contains(env[v], "REPLACE_ME") {
			t.Errorf("%s: ${%s} defaults to %q in docker-compose.yml; a committed credential must be a REPLACE_ME placeholder or empty", name, v, env[v])
		}
	}
	cfg := mustLoadSluiceConfig(t, src, string(data), env)

	host, proxyPort, err := splitListen(cfg.Listen)
	if err != nil || !isLoopback(host) {
		t.Errorf("%s: listen %q, want loopback: the app shares the sidecar's network namespace, nothing else may use the key it adds", name, cfg.Listen)
	}
	adminHost, adminPort, err := splitListen(cfg.Admin.Listen)
	if err != nil {
		t.Fatalf("%s: admin.listen: %v", name, err)
	}
	if isLoopback(adminHost) {
		t.Errorf("%s: admin.listen %q is loopback: Prometheus scrapes it over the compose network", name, cfg.Admin.Listen)
	}
	for _, port := range s.Ports {
		if port.Target == uint32(proxyPort) || port.Target != uint32(adminPort) {
			t.Errorf("%s: publishes container port %d, want the admin port %d only", name, port.Target, adminPort)
		}
		if port.HostIP != "127.0.0.1" {
			t.Errorf("%s: publishes port %d on %q, want 127.0.0.1 only", name, port.Target, port.HostIP)
		}
	}

	// Compose sends SIGTERM, then SIGKILL after stop_grace_period: Sluice
	// needs shutdown_grace and a little more to dead-letter and flush.
	if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) <= cfg.ShutdownGrace {
		t.Errorf("%s: stop_grace_period %v, want more than shutdown_grace %v", name, s.StopGracePeriod, cfg.ShutdownGrace)
	}

	// The spool, on a named volume of its own (the root is read-only).
	spool := cfg.DeadLetter.File
	var vol *types.ServiceVolumeConfig
	for i, v := range s.Volumes {
		if under(spool, v.Target) && (vol == nil || len(v.Target) > len(vol.Target)) {
			vol = &s.Volumes[i]
		}
	}
	switch {
	case !filepath.IsAbs(spool):
		t.Errorf("%s: deadletter.file %q is relative to the working directory; give the volume's path", name, spool)
	case vol == nil:
		t.Errorf("%s: deadletter.file %s is on no volume (the root filesystem is read-only)", name, spool)
	case vol.Type != types.VolumeTypeVolume || vol.ReadOnly:
		t.Errorf("%s: deadletter.file %s is on a %s mount (read-only %v), want a writable named volume", name, spool, vol.Type, vol.ReadOnly)
	case vol.Target != "/home/nonroot":
		// A new named volume takes the owner of the directory it is
		// mounted on; only the image's own home belongs to its user.
		t.Errorf("%s: the spool volume is mounted on %s; a new volume there belongs to root, not uid %d: mount it on /home/nonroot", name, vol.Target, img.uid)
	}
	for _, other := range p.Services {
		for _, v := range other.Volumes {
			if vol != nil && other.Name != name && v.Type == types.VolumeTypeVolume && v.Source == vol.Source {
				t.Errorf("%s: spool volume %s is shared with %s: each replica needs its own", name, vol.Source, other.Name)
			}
		}
	}

	return &composeSluice{
		service:          name,
		cfgListen:        cfg.Listen,
		adminPort:        adminPort,
		expectedReplicas: cfg.Redis.ExpectedReplicas,
		redisURL:         cfg.Redis.URL,
		baseURL:          cfg.Providers[0].BaseURL,
	}
}

// bindSource returns the host path bind-mounted at target in s, or "".
func bindSource(s types.ServiceConfig, target string) string {
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeBind && v.Target == target {
			return v.Source
		}
	}
	return ""
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// prometheusConfig is the part of prometheus.yml the cross-checks read;
// promtool checks the whole file.
type prometheusConfig struct {
	RuleFiles     []string `json:"rule_files"`
	ScrapeConfigs []struct {
		StaticConfigs []struct {
			Targets []string `json:"targets"`
		} `json:"static_configs"`
	} `json:"scrape_configs"`
}

// checkComposePrometheus checks that Prometheus scrapes every sidecar's admin
// port and loads deploy/prometheus/alerts.yml through its mount, and that
// promtool accepts the config with the rule files it will find.
func checkComposePrometheus(t *testing.T, p *types.Project, sidecars []*composeSluice) {
	s, ok := p.Services["prometheus"]
	if !ok {
		t.Fatal("no prometheus service")
	}
	src := bindSource(s, "/etc/prometheus/prometheus.yml")
	if src == "" {
		t.Fatal("prometheus: no bind mount at /etc/prometheus/prometheus.yml")
	}
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var pc prometheusConfig
	if err := sigsyaml.Unmarshal(data, &pc); err != nil {
		t.Fatalf("%s: %v", src, err)
	}

	var got, want []string
	for _, sc := range pc.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			got = append(got, st.Targets...)
		}
	}
	for _, sc := range sidecars {
		want = append(want, fmt.Sprintf("%s:%d", sc.service, sc.adminPort))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("prometheus scrapes %q, want every sidecar's admin port %q", got, want)
	}

	// The rule files as the container sees them, mapped back to the host
	// through the mounts: that is how ../prometheus/alerts.yml is loaded.
	hostConfig := string(data)
	var rules int
	for _, rf := range pc.RuleFiles {
		host := ""
		for _, v := range s.Volumes {
			if v.Type == types.VolumeTypeBind && under(rf, v.Target) {
				rel, _ := filepath.Rel(v.Target, rf)
				host = filepath.Join(v.Source, rel)
			}
		}
		if host == "" {
			t.Errorf("prometheus: rule file %s is on no mount", rf)
			continue
		}
		if want, _ := filepath.Abs("../prometheus/alerts.yml"); host != want {
			t.Errorf("prometheus: rule file %s is %s on the host, want %s", rf, host, want)
		}
		switch _, err := os.Stat(host); {
		case errors.Is(err, fs.ErrNotExist):
			// Prometheus skips a rule file that is not there; so does
			// this check, with a note.
			t.Logf("prometheus: %s is not there (yet); checking without it", host)
			hostConfig = strings.ReplaceAll(hostConfig, "  - "+rf+"\n", "")
		case err != nil:
			t.Error(err)
		default:
			rules++
			hostConfig = strings.ReplaceAll(hostConfig, rf, host)
		}
	}

	// promtool, installed by `make test-deps`, checks the config and the
	// rule files it names.
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is not installed (run make test-deps, or apt-get install prometheus): %v", err)
	}
	tmp := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(tmp, []byte(hostConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(t.Context(), promtool, "check", "config", tmp).CombinedOutput()
	if err != nil {
		t.Errorf("promtool check config: %v\n%s", err, out)
	} else if rules > 0 && !strings.Contains(string(out), "rules found") {
		t.Errorf("promtool check config did not check the rule files:\n%s", out)
	}
}
