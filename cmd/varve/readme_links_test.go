package main

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// README's links work: every #anchor names one of its headings (as
// GitHub derives the anchor: lower case, punctuation dropped, spaces as
// dashes), every relative path exists in the repository.
func TestReadmeLinks(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	anchors := map[string]bool{}
	inCode := false
	for l := range strings.SplitSeq(text, "\n") {
		if strings.HasPrefix(l, "```") {
			inCode = !inCode
		}
		if h, ok := strings.CutPrefix(l, "#"); ok && !inCode {
			anchors[githubAnchor(strings.TrimLeft(h, "# "))] = true
		}
	}
	links := regexp.MustCompile(`\]\(([^)\s]+)\)`).FindAllStringSubmatch(text, -1)
	if len(links) < 5 {
		t.Fatalf("found %d links in README.md", len(links))
	}
	for _, m := range links {
		target := m[1]
		switch {
		case strings.HasPrefix(target, "http://"), strings.HasPrefix(target, "https://"):
		case strings.HasPrefix(target, "#"):
			if !anchors[target[1:]] {
				t.Errorf("README links to %s, which is no heading", target)
			}
		default:
			path, _, _ := strings.Cut(target, "#")
			if _, err := os.Stat(filepath.Join("../..", path)); err != nil {
				t.Errorf("README links to %s: %v", target, err)
			}
		}
	}
}

// githubAnchor is the id GitHub gives a heading.
func githubAnchor(heading string) string {
	var sb strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			sb.WriteRune('-')
		case r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('0' <= r && r <= '9'):
			sb.WriteRune(r)
		}
	}
	return sb.String()
}

// The Quickstart's commands exist as written: each ./varve or
// go run ./cmd/varve line of its code blocks parses (a client tool with
// --help appended; serve against serve's own flag set).
func TestReadmeQuickstartCommandsParse(t *testing.T) {
	section := readmeSection(t, "Quickstart")
	n := 0
	inCode := false
	for l := range strings.SplitSeq(section, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "```") {
			inCode = !inCode
			continue
		}
		if !inCode {
			continue
		}
		l, _, _ = strings.Cut(l, " #")
		l = strings.TrimSuffix(strings.TrimSpace(l), " &")
		var cmdline string
		for _, prefix := range []string{"./varve ", "go run ./cmd/varve "} {
			if i := strings.Index(l, prefix); i >= 0 && (i == 0 || strings.HasSuffix(l[:i], "| ")) {
				cmdline = l[i+len(prefix):]
			}
		}
		if cmdline == "" {
			continue
		}
		n++
		args := shellWords(t, strings.ReplaceAll(cmdline, "$P", "1@127.0.0.1:19093"))
		if args[0] == "serve" {
			fs := serveFlagSet()
			fs.SetOutput(io.Discard)
			if err := fs.Parse(args[1:]); err != nil || fs.NArg() != 0 {
				t.Errorf("README: %s: %v (arguments left: %q)", l, err, fs.Args())
			}
			continue
		}
		cmd, err := parseCommandLine(args)
		if err != nil {
			t.Errorf("README: %s: %v", l, err)
			continue
		}
		if r := runCLI(t, "", append([]string{cmd.name}, append(cmd.args, "--help")...)...); r.code != 0 {
			t.Errorf("README: %s: exit %d, %s", l, r.code, r.stderr)
		}
	}
	if n < 8 {
		t.Errorf("the Quickstart has %d varve commands, want at least 8", n)
	}
}
