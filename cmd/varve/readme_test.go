package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// readmeSection is the text of README's "## name" section.
func readmeSection(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "\n## "+name+"\n")
	if !ok {
		t.Fatalf("README.md has no %q section", "## "+name)
	}
	section, _, _ := strings.Cut(rest, "\n## ")
	return section
}

// serveFlagSet is serve's flag set as runServe registers it.
func serveFlagSet() *flag.FlagSet {
	var s serveFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	s.register(fs)
	return fs
}

// TestReadmeConfigurationTable keeps README's configuration reference in
// step with serve's flag set as it is when the test runs: every flag with
// its environment variable, YAML key and default. To update README,
// replace the table with the output of
//
//	go run ./cmd/varve serve --print-config-reference
func TestReadmeConfigurationTable(t *testing.T) {
	section := readmeSection(t, "Configuration")
	if !strings.Contains(section, "go run ./cmd/varve serve --print-config-reference") {
		t.Error("the Configuration section does not say how to regenerate its table")
	}
	rows := map[string][]string{} // flag name -> cells
	for l := range strings.SplitSeq(section, "\n") {
		if !strings.HasPrefix(l, "| `--") {
			continue
		}
		cells := strings.Split(strings.Trim(l, "|"), " | ")
		name := strings.Trim(strings.TrimSpace(cells[0]), "`-")
		rows[name] = cells
	}
	var problems []string
	known := map[string]bool{}
	serveFlagSet().VisitAll(func(f *flag.Flag) {
		known[f.Name] = true
		cells, ok := rows[f.Name]
		if !ok {
			problems = append(problems, fmt.Sprintf("--%s is missing", f.Name))
			return
		}
		want := configRow(f)
		if len(cells) < 5 {
			problems = append(problems, fmt.Sprintf("--%s: row %q has %d cells, want 5", f.Name, cells, len(cells)))
			return
		}
		for i, c := range []struct{ what, want string }{{"environment variable", "`" + want.env + "`"}, {"YAML key", want.yamlKey}, {"default", want.def}} {
			if got := strings.TrimSpace(cells[i+1]); got != c.want {
				problems = append(problems, fmt.Sprintf("--%s: %s %s, want %s", f.Name, c.what, got, c.want))
			}
		}
	})
	for name := range rows {
		if !known[name] {
			problems = append(problems, fmt.Sprintf("--%s is not a flag of serve any more", name))
		}
	}
	want := configReference()
	if len(problems) == 0 && !strings.Contains(section, want) {
		problems = append(problems, "a description changed")
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		t.Fatalf("README's configuration table is stale: %s.\nReplace it with the output of "+
			"`go run ./cmd/varve serve --print-config-reference`:\n\n%s", strings.Join(problems, "; "), want)
	}
}

// The table's environment variables are the ones serve reads, its YAML
// keys are the ones a config file accepts (--config itself is not one),
// and varve serve --print-config-reference prints it.
func TestConfigReferenceMatchesSettings(t *testing.T) {
	fs := serveFlagSet()
	asked := map[string]bool{}
	if err := resolveSettings(fs, nil, func(k string) string { asked[k] = true; return "" }); err != nil {
		t.Fatal(err)
	}
	var yaml strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		if env := serveEnvName(f.Name); !asked[env] {
			t.Errorf("--%s: serve never reads %s", f.Name, env)
		}
		delete(asked, serveEnvName(f.Name))
		if f.Name != "config" {
			fmt.Fprintf(&yaml, "%s: %q\n", f.Name, f.DefValue)
		}
	})
	for env := range asked {
		t.Errorf("serve reads %s, which the table does not list", env)
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "all.yaml")
	if err := os.WriteFile(file, []byte(yaml.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := resolveSettings(serveFlagSet(), []string{"--config", file}, func(string) string { return "" }); err != nil {
		t.Errorf("a file with every YAML key at its default: %v\n%s", err, yaml.String())
	}
	if err := os.WriteFile(file, []byte("config: other.yaml\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := resolveSettings(serveFlagSet(), []string{"--config", file}, func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), `unknown key "config"`) {
		t.Errorf("config as a YAML key: %v", err)
	}

	r := runVarve(t, nil, "serve", "--print-config-reference")
	if r.code != 0 || r.stderr != "" || r.stdout != configReference() {
		t.Errorf("serve --print-config-reference: exit %d, stderr %q, stdout %q", r.code, r.stderr, r.stdout)
	}
}

// The CLI section's examples use commands and flags that exist: each
// `varve ...` line of its code blocks parses (run with --help, which
// parses every flag before it).
func TestReadmeCLIExamplesParse(t *testing.T) {
	section := readmeSection(t, "CLI")
	n := 0
	inCode := false
	for l := range strings.SplitSeq(section, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "```") {
			inCode = !inCode
			continue
		}
		i := strings.Index(l, "varve ")
		if !inCode || i < 0 || strings.HasPrefix(l, "#") {
			continue // prose, or a comment
		}
		l = l[i+len("varve "):]
		l, _, _ = strings.Cut(l, " #")
		l, _, _ = strings.Cut(l, " <")
		l, _, _ = strings.Cut(l, " |")
		args := shellWords(t, l)
		if len(args) == 0 || args[0] == "serve" || args[0] == "health" || strings.HasPrefix(args[0], "-") {
			continue
		}
		n++
		cmd, err := parseCommandLine(args)
		if err != nil {
			t.Errorf("README: varve %s: %v", l, err)
			continue
		}
		if r := runCLI(t, "", append([]string{cmd.name}, append(cmd.args, "--help")...)...); r.code != 0 {
			t.Errorf("README: varve %s: exit %d, %s", l, r.code, r.stderr)
		}
	}
	if n < 10 {
		t.Errorf("the CLI section has %d varve examples, want at least 10", n)
	}
}

// shellWords splits a command line as sh would for the simple quoting
// README uses: '...' and "..." without escapes.
func shellWords(t *testing.T, s string) []string {
	var out []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		t.Fatalf("unbalanced quote in %q", s)
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}
