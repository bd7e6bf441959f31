package image

import (
	"bufio"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const module = "github.com/pullgate/pullgate"

// TestDockerContext: `docker build` sees only what .dockerignore lets through and what the
// Dockerfile COPYs. Every Go file of every package of this module that the binaries depend on
// (go list -deps ./cmd/webhook ./cmd/sleeper), the module files and the build script must pass both, or the
// image does not build where Docker exists (it once lacked internal/).
func TestDockerContext(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ignore := readDockerignore(t, filepath.Join(root, ".dockerignore"))
	copied := copySources(t, filepath.Join(root, "Dockerfile"))

	cmd := exec.CommandContext(t.Context(), "go", "list", "-deps", "-f", `{{if .Module}}{{if eq .Module.Path "`+module+`"}}{{.Dir}}{{end}}{{end}}`, "./cmd/webhook")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	needed := []string{"go.mod", "go.sum", "hack/build.sh"}
	for _, dir := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, dir)
		if err != nil {
			t.Fatal(err)
		}
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("package %s has no Go files (%v)", rel, err)
		}
		for _, f := range files {
			if !strings.HasSuffix(f, "_test.go") {
				needed = append(needed, filepath.ToSlash(filepath.Join(rel, filepath.Base(f))))
			}
		}
	}
	if len(needed) < 10 {
		t.Fatalf("go list found only %v", needed)
	}
	for _, f := range needed {
		if ignore.excludes(f) {
			t.Errorf("%s is excluded from the build context by .dockerignore", f)
		}
		if !covered(f, copied) {
			t.Errorf("%s is in no COPY of the Dockerfile's build stage (COPY sources: %v)", f, copied)
		}
	}
}

// TestBuildFlagsInOnePlace: the Go build flags are written in hack/build.sh only; the Makefile,
// hack/image.sh and the Dockerfile run it.
func TestBuildFlagsInOnePlace(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"Makefile", "hack/image.sh", "Dockerfile"} {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		text := string(data)
		for _, flag := range []string{"-trimpath", "-ldflags", "CGO_ENABLED"} {
			if strings.Contains(text, flag) {
				t.Errorf("%s sets %s itself; hack/build.sh is the one place", f, flag)
			}
		}
		if !strings.Contains(text, "hack/build.sh") {
			t.Errorf("%s does not build with hack/build.sh", f)
		}
	}
}

// dockerignore is a .dockerignore file's patterns, matched as Docker matches them: in order,
// the last match decides, "!" re-includes, a pattern matches a path or any of its parents,
// "**" spans directories.
type dockerignore []struct {
	re      *regexp.Regexp
	include bool
}

func readDockerignore(t *testing.T, file string) dockerignore {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var d dockerignore
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		include := strings.HasPrefix(line, "!")
		pattern := path.Clean(strings.TrimPrefix(strings.TrimPrefix(line, "!"), "/"))
		d = append(d, struct {
			re      *regexp.Regexp
			include bool
		}{globRegexp(pattern), include})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return d
}

// globRegexp compiles a Docker ignore pattern: * and ? within a path element, ** across them.
func globRegexp(pattern string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("^")
	for i := 0; i < len(pattern); i++ {
		switch c := pattern[i]; {
		case strings.HasPrefix(pattern[i:], "**/"):
			b.WriteString("(.*/)?")
			i += 2
		case strings.HasPrefix(pattern[i:], "**"):
			b.WriteString(".*")
			i++
		case c == '*':
			b.WriteString("[^/]*")
		case c == '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

func (d dockerignore) excludes(file string) bool {
	excluded := false
	for _, p := range d {
		for q := file; q != "." && q != "/"; q = path.Dir(q) {
			if p.re.MatchString(q) {
				excluded = !p.include
				break
			}
		}
	}
	return excluded
}

// copySources lists the sources of the COPY instructions that copy from the build context (not
// --from another stage) in the Dockerfile.
func copySources(t *testing.T, file string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 3 || !strings.EqualFold(fields[0], "COPY") {
			continue
		}
		args := fields[1:]
		fromStage := false
		for len(args) > 0 && strings.HasPrefix(args[0], "--") {
			fromStage = fromStage || strings.HasPrefix(args[0], "--from=")
			args = args[1:]
		}
		if fromStage || len(args) < 2 {
			continue
		}
		for _, src := range args[:len(args)-1] {
			out = append(out, path.Clean(src))
		}
	}
	return out
}

func covered(file string, sources []string) bool {
	for _, s := range sources {
		if s == "." || file == s || strings.HasPrefix(file, s+"/") {
			return true
		}
	}
	return false
}
