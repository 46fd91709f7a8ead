package main

import (
	"flag"
	"io"
	"strings"
	"testing"
)

// serve and health have --help in the tools' shape (usage, examples,
// flags) on stdout, through the real main, and their examples parse;
// a bad flag is one line on stderr.
func TestServeAndHealthHelp(t *testing.T) {
	healthFlags := func() *flag.FlagSet {
		fs := flag.NewFlagSet("health", flag.ContinueOnError)
		fs.String("admin-addr", "", "")
		fs.Bool("ready", false, "")
		fs.Duration("timeout", 0, "")
		return fs
	}
	for _, tc := range []struct {
		name     string
		examples string
		flags    func() *flag.FlagSet
		want     []string
	}{
		{"serve", serveExamples, serveFlagSet, []string{"Usage: varve serve [flags]", "\n  --kafka-addr STRING\n", "\n  --write-caching\n"}},
		{"health", healthExamples, healthFlags, []string{"Usage: varve health [--ready]", "\n  --ready\n", "\n  --timeout DURATION\n"}},
	} {
		r := runVarve(t, nil, tc.name, "--help")
		if r.code != 0 || r.stderr != "" {
			t.Errorf("%s --help: exit %d, stderr %q", tc.name, r.code, r.stderr)
		}
		for _, want := range append(tc.want, "\nExamples:\n"+tc.examples, "\nFlags:\n") {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("%s --help lacks %q:\n%s", tc.name, want, r.stdout)
			}
		}
		n := 0
		for l := range strings.SplitSeq(strings.ReplaceAll(tc.examples, "\\\n", ""), "\n") {
			l, _, _ = strings.Cut(l, " #")
			_, l, ok := strings.Cut(l, "varve "+tc.name)
			if !ok {
				continue
			}
			n++
			args := shellWords(t, l)
			if len(args) == 1 && args[0] == "--print-config-reference" {
				continue // main's, before the flags
			}
			fs := tc.flags()
			fs.SetOutput(io.Discard)
			if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
				t.Errorf("%s example %q: %v %q", tc.name, l, err, fs.Args())
			}
		}
		if n < 2 {
			t.Errorf("%s: %d examples", tc.name, n)
		}
		wantFailure(t, runVarve(t, nil, tc.name, "--bogus"), 2, `^varve `+tc.name+`: flag provided but not defined: -bogus\n$`)
	}
}
