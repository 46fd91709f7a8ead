package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/varvelog/varve/integration"
)

// TestMain lets a test run this package's main as the real binary would:
// with VARVE_TEST_RUN_MAIN=1 the test binary is varve (runVarve).
func TestMain(m *testing.M) {
	if os.Getenv("VARVE_TEST_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runVarve runs `varve args...` in a child process (this test binary
// running main) with the environment given on top of a clean one.
func runVarve(t *testing.T, env map[string]string, args ...string) toolResult {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = []string{"VARVE_TEST_RUN_MAIN=1", "PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return toolResult{code, out.String(), errb.String()}
}

func TestParseCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		name    string
		rest    string
		brokers string
	}{
		{[]string{"topic", "list"}, "topic", "list", ""},
		{[]string{"--brokers", "h:1", "topic", "list", "-o", "json"}, "topic", "list -o json", "h:1"},
		{[]string{"--brokers=h:1,h:2", "produce", "-t", "x"}, "produce", "-t x", "h:1,h:2"},
		{[]string{"-brokers", "h:1", "bench", "e2e"}, "bench", "e2e", "h:1"},
		{[]string{"serve", "--id", "2"}, "serve", "--id 2", ""},
		{[]string{"--", "consume", "-t", "x"}, "consume", "-t x", ""},
	} {
		cmd, err := parseCommandLine(tc.args)
		if err != nil || cmd.name != tc.name || strings.Join(cmd.args, " ") != tc.rest || cmd.brokers != tc.brokers {
			t.Errorf("%q: %+v, %v", tc.args, cmd, err)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "missing command (see varve --help)"},
		{[]string{"--brokers", "h:1"}, "missing command (see varve --help)"},
		{[]string{"--bogus", "topic", "list"}, "flag provided but not defined: -bogus (see varve --help)"},
		{[]string{"--brokers"}, "flag needs an argument: -brokers (see varve --help)"},
		{[]string{"--brokers", " ", "topic", "list"}, "--brokers is empty"},
		{[]string{"frobnicate"}, `unknown command "frobnicate" (see varve --help)`},
		{[]string{"--brokers", "h:1", "serve"}, "--brokers is for the client tools, not serve"},
	} {
		_, err := parseCommandLine(tc.args)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%q: %v, want %q", tc.args, err, tc.want)
		}
	}
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		if _, err := parseCommandLine(args); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%q: %v, want help", args, err)
		}
	}
}

// runCommandLine runs a client tool's command line in this process as
// main does (global flags, then the tool with the global --brokers), with
// the environment variables given set for the run.
func runCommandLine(t *testing.T, env map[string]string, args ...string) toolResult {
	t.Helper()
	for k, v := range env {
		old, had := os.LookupEnv(k)
		if err := os.Setenv(k, v); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if had {
				_ = os.Setenv(k, old)
			} else {
				_ = os.Unsetenv(k)
			}
		}()
	}
	cmd, err := parseCommandLine(args)
	if err != nil {
		return toolResult{2, "", "varve: " + err.Error() + "\n"}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code := invokeTool(withGlobalBrokers(ctx, cmd.brokers), cmd.name, cmd.args, strings.NewReader(""), &out, &errb)
	return toolResult{code, out.String(), errb.String()}
}

// --brokers before the tool, after it, or VARVE_BROKERS: the tool's own
// flag wins over the global one, which wins over the environment.
// Failures are one line with a non-zero exit; a few runs go through the
// real main in a child process for its exit codes.
func testGlobalBrokers(t *testing.T, c *integration.Cluster) {
	createTopic(t, c, "global", 2)
	addr, closed := c.Addr(), closedAddr(t)
	listed := regexp.MustCompile(`(?m)^global\t2\t1$`)
	for _, tc := range []struct {
		env  map[string]string
		args []string
	}{
		{nil, []string{"--brokers", addr, "topic", "list"}},
		{nil, []string{"--brokers=" + addr, "topic", "list"}},
		{nil, []string{"topic", "list", "--brokers", addr}},
		{map[string]string{"VARVE_BROKERS": addr}, []string{"topic", "list"}},
		{map[string]string{"VARVE_BROKERS": closed}, []string{"--brokers", addr, "topic", "list"}},
		{nil, []string{"--brokers", closed, "topic", "list", "--brokers", addr}},
	} {
		r := runCommandLine(t, tc.env, tc.args...)
		if r.code != 0 || r.stderr != "" || !listed.MatchString(r.stdout) {
			t.Errorf("env %v varve %q: exit %d, stdout %q, stderr %q", tc.env, tc.args, r.code, r.stdout, r.stderr)
		}
	}
	unreachable := `^varve topic list: no broker reachable at ` + regexp.QuoteMeta(closed) + `: .*connection refused\n$`
	wantFailure(t, runCommandLine(t, map[string]string{"VARVE_BROKERS": closed}, "topic", "list"), 1, unreachable)
	wantFailure(t, runCommandLine(t, nil, "--brokers", addr, "topic", "list", "--brokers", closed), 1, unreachable)
	wantFailure(t, runCommandLine(t, nil, "--brokers", closed, "bench", "e2e"), 1, `^varve bench e2e: no broker reachable at `+regexp.QuoteMeta(closed))

	// The real main: exit codes and one-line errors.
	if r := runVarve(t, nil, "--brokers", addr, "topic", "list"); r.code != 0 || r.stderr != "" || !listed.MatchString(r.stdout) {
		t.Errorf("varve --brokers ADDR topic list: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	wantFailure(t, runVarve(t, nil, "--brokers", closed, "topic", "list"), 1, unreachable)
	wantFailure(t, runVarve(t, nil, "--bogus", "topic", "list"), 2, `^varve: flag provided but not defined: -bogus \(see varve --help\)\n$`)
	wantFailure(t, runVarve(t, nil, "topic", "list", "--bogus"), 2, `^varve topic list: flag provided but not defined: -bogus \(see --help\)\n$`)
	wantFailure(t, runVarve(t, nil, "frobnicate"), 2, `^varve: unknown command "frobnicate" \(see varve --help\)\n$`)
	if r := runVarve(t, nil, "--help"); r.code != 0 || !strings.Contains(r.stdout, "Usage: varve [--brokers HOST:PORT,...] COMMAND") {
		t.Errorf("--help: exit %d, %q", r.code, r.stdout)
	}
}

// A mistake on serve's or health's command line exits 2, as for the
// client tools; a failure of the command itself exits 1.
func TestServeAndHealthUsageExitCodes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"serve", "--no-such-flag"}, 2, "no-such-flag"},
		{[]string{"serve", "--id", "-3"}, 2, "--id -3 out of range"},
		{[]string{"serve", "--peers", "one@nowhere"}, 2, "one@nowhere"},
		{[]string{"health", "--no-such-flag"}, 2, "no-such-flag"},
		{[]string{"health", "extra"}, 2, `unexpected argument "extra"`},
		// Nothing listens on port 1: a failure, not a usage mistake.
		{[]string{"health", "--admin-addr", "127.0.0.1:1", "--timeout", "2s"}, 1, "127.0.0.1:1"},
	} {
		r := runVarve(t, nil, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("varve %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.code, tc.msg)
		}
	}
}
