package validate

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-ai/sluice/config"
)

// repoRoot is the main module's directory, the one go.mod's replace points
// at: the Dockerfile and the shipped config live there.
const repoRoot = "../.."

// distrolessNonroot is the uid of the "nonroot" user of the distroless
// images (GoogleContainerTools/distroless, base/README.md). Kubernetes cannot
// check runAsNonRoot against a user given by name, so the manifests give it
// as a number, and it must be this one.
const distrolessNonroot = 65532

// runtimeImage is what the final stage of the repository's Dockerfile
// promises the examples.
type runtimeImage struct {
	entrypoint []string // exec form
	uid        int64
}

// mustReadDockerfile reads the final stage of the repository's Dockerfile:
// its ENTRYPOINT (exec form) and the numeric uid of its USER.
func mustReadDockerfile(tb testing.TB) runtimeImage {
	tb.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		tb.Fatalf("opening the Dockerfile: %v", err)
	}
	defer f.Close()
	var (
		img        runtimeImage
		from, user string
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		instr, rest, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM": // a new stage: only the last one is the image
			from, user, img.entrypoint = strings.Fields(rest)[0], "", nil
		case "USER":
			user = rest
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(rest), &img.entrypoint); err != nil {
				tb.Fatalf("Dockerfile: ENTRYPOINT %s is not in exec form: %v", rest, err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("reading the Dockerfile: %v", err)
	}
	name, _, _ := strings.Cut(user, ":")
	switch {
	case name == "nonroot" && strings.Contains(from, "distroless") && strings.HasSuffix(from, ":nonroot"):
		img.uid = distrolessNonroot
	default:
		uid, err := strconv.ParseInt(name, 10, 64)
		if err != nil {
			tb.Fatalf("Dockerfile: USER %q of the final stage (FROM %s) is neither distroless's nonroot nor a uid", user, from)
		}
		img.uid = uid
	}
	if img.uid == 0 {
		tb.Fatalf("Dockerfile: the final stage runs as root")
	}
	if len(img.entrypoint) == 0 {
		tb.Fatalf("Dockerfile: the final stage has no ENTRYPOINT")
	}
	return img
}

// configFlag returns the -config value of a Sluice command line (its
// arguments after the binary), or "" when there is none.
func configFlag(args []string) string {
	for i, a := range args {
		switch {
		case a == "-config" || a == "--config":
			if i+1 < len(args) {
				return args[i+1]
			}
		case strings.HasPrefix(a, "-config="), strings.HasPrefix(a, "--config="):
			_, v, _ := strings.Cut(a, "=")
			return v
		}
	}
	return ""
}

// referencedVars lists the variables a config text expands, in order of
// first use. Sluice expands the whole text before reading YAML (comments
// included), with "$$" as a literal "$".
func referencedVars(text string) []string {
	var names []string
	os.Expand(text, func(name string) string {
		if name != "$" && !slices.Contains(names, name) {
			names = append(names, name)
		}
		return ""
	})
	return names
}

// secretish reports whether a variable's name says it holds a credential,
// which must come from a Secret (Kubernetes) or the operator's environment
// (Compose), never from a literal in the examples.
func secretish(name string) bool {
	n := strings.ToUpper(name)
	return strings.Contains(n, "TOKEN") || strings.Contains(n, "KEY") || strings.Contains(n, "PASSWORD")
}

// mustLoadSluiceConfig does what `sluice check -config FILE` does in a
// container whose environment is env: it writes text to a file and runs
// config.Load on it with exactly env's values for the variables the text
// uses. A variable the text uses that env lacks is an error: Sluice would
// quietly read it as empty. source names the text in messages.
func mustLoadSluiceConfig(t *testing.T, source, text string, env map[string]string) *config.Config {
	t.Helper()
	for _, name := range referencedVars(text) {
		v, ok := env[name]
		if !ok {
			t.Errorf("%s uses ${%s}, which the container's environment does not set", source, name)
		}
		t.Setenv(name, v)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("sluice check of %s: %v", source, err)
	}
	return cfg
}

// splitListen splits a listen address into its host and numeric port.
func splitListen(addr string) (host string, port int32, err error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port of %q: %w", addr, err)
	}
	return host, int32(n), nil
}

// isLoopback reports whether a listen host is a loopback address or name.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// under reports whether path lies inside dir.
func under(path, dir string) bool {
	rel, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(path))
	return err == nil && rel != "." && !strings.HasPrefix(rel, "..")
}
