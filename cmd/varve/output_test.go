package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/varvelog/varve/broker"
	"github.com/varvelog/varve/integration"
)

// toolResult is what one run of a client tool left behind.
type toolResult struct {
	code           int
	stdout, stderr string
}

// runCLI runs tool args[0] with args[1:] as main would (invokeTool),
// stdin given, output captured.
func runCLI(t *testing.T, stdin string, args ...string) toolResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code := invokeTool(ctx, args[0], args[1:], strings.NewReader(stdin), &out, &errb)
	return toolResult{code, out.String(), errb.String()}
}

// mustRun runs a tool that must succeed and returns its stdout.
func mustRun(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	r := runCLI(t, stdin, args...)
	if r.code != 0 {
		t.Fatalf("varve %s: exit %d, stderr %q", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// wantFailure checks a failed run: the exit code, nothing on stdout, and
// one line on stderr matching re.
func wantFailure(t *testing.T, r toolResult, code int, re string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit code %d, want %d (stderr %q)", r.code, code, r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("stdout %q, want nothing", r.stdout)
	}
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
		t.Errorf("stderr %q: want exactly one line", r.stderr)
	}
	if !regexp.MustCompile(re).MatchString(r.stderr) {
		t.Errorf("stderr %q does not match %q", r.stderr, re)
	}
}

// TestToolsAgainstABroker runs every tool against one in-process broker
// (one cluster for all: starting one costs more than the checks).
func TestToolsAgainstABroker(t *testing.T) {
	c := integration.NewCluster(t, integration.Brokers(1), integration.WithConfig(func(cfg *broker.Config) {
		cfg.GroupInitialRebalanceDelay = -1 // none: every consume -g joins a new group
	}))
	for _, tc := range []struct {
		name string
		run  func(*testing.T, *integration.Cluster)
	}{
		{"ProduceThenConsume", testProduceThenConsume},
		{"ProduceKeyedPartitions", testProduceKeyedPartitions},
		{"ProduceHeadersConsumeJSON", testProduceHeadersConsumeJSON},
		{"ProduceFailures", testProduceFailures},
		{"ProduceJSONSummary", testProduceJSONSummary},
		{"ProduceProgress", testProduceProgress},
		{"ConsumeUnknownTopic", testConsumeUnknownTopic},
		{"ConsumeAsGroup", testConsumeAsGroup},
		{"ConsumeFollows", testConsumeFollows},
		{"ProduceAcksZeroSnappy", testProduceAcksZeroSnappy},
		{"TopicRoundTrip", testTopicRoundTrip},
		{"GroupDescribeLag", testGroupDescribeLag},
		{"GroupResetOffsets", testGroupResetOffsets},
		{"ChangesAsJSON", testChangesAsJSON},
		{"ClusterInfo", testClusterInfo},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, c) })
	}
}

// closedAddr is a 127.0.0.1 port nothing listens on.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// Every tool fails fast, on one line, with exit code 1, without a broker.
func TestToolsWithoutABroker(t *testing.T) {
	addr := closedAddr(t)
	for _, args := range [][]string{
		{"produce", "-t", "x"},
		{"consume", "-t", "x"},
		{"topic", "list"},
		{"topic", "describe", "x"},
		{"group", "list"},
		{"group", "describe", "g"},
		{"cluster", "info"},
	} {
		start := time.Now()
		r := runCLI(t, "a\n", append(args, "--brokers", addr)...)
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%v: took %v", args, d)
		}
		name := args[0]
		if !strings.HasPrefix(args[1], "-") {
			name += " " + args[1] // topic list
		}
		wantFailure(t, r, 1, `^varve `+name+`: no broker reachable at `+regexp.QuoteMeta(addr)+`: unable to dial: dial tcp `+regexp.QuoteMeta(addr)+`: connect: connection refused\n$`)
	}
}

func TestToolUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		re   string
	}{
		{[]string{"produce"}, `^varve produce: -t TOPIC is required\n$`},
		{[]string{"produce", "-t", "x", "--acks", "2"}, `acks "2": want all, 1 or 0`},
		{[]string{"produce", "-t", "x", "-z", "brotli"}, `compression "brotli"`},
		{[]string{"produce", "-t", "x", "-H", "novalue"}, `-H "novalue": want key=value`},
		{[]string{"consume", "-t", "x", "-o", "yesterday"}, `offset "yesterday": want beginning, end`},
		{[]string{"consume", "-t", "x", "-f", "%z"}, `unknown directive %z`},
		{[]string{"consume", "-t", "x", "-f", "%s", "--json"}, `-k, -f and --json exclude each other`},
		{[]string{"consume", "-t", "x", "-k", ":", "-f", "%s"}, `-k, -f and --json exclude each other`},
		{[]string{"consume", "-t", "x", "-k", ":", "--json"}, `-k, -f and --json exclude each other`},
		{[]string{"consume", "-t", "x", "-g", "g", "-p", "0"}, `-p cannot be combined with -g`},
		{[]string{"consume", "--bogus"}, `flag provided but not defined: -bogus \(see --help\)`},
		{[]string{"topic"}, `missing command: one of create, list, describe, delete, alter-config`},
		{[]string{"topic", "frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"topic", "create"}, `missing argument \(usage: varve topic create NAME`},
		{[]string{"topic", "create", "a", "b"}, `unexpected argument "b"`},
		{[]string{"topic", "list", "-o", "yaml"}, `-o "yaml": want text or json`},
		{[]string{"topic", "alter-config", "t"}, `nothing to alter`},
		{[]string{"group", "reset-offsets", "g", "-t", "x"}, `give exactly one of --to-earliest`},
		{[]string{"group", "reset-offsets", "g", "-t", "x", "--to-earliest", "--to-latest"}, `give exactly one of`},
		{[]string{"group", "reset-offsets", "g", "-t", "x", "--to-time", "yesterday"}, `^varve group reset-offsets: --to-time: time "yesterday": want Unix milliseconds, an RFC 3339 time`},
		{[]string{"group", "reset-offsets", "g", "-t", "x", "--to-offset", "-3"}, `--to-offset takes an offset >= 0`},
		{[]string{"consume", "-t", "x", "-o", "@2026-11-28"}, `offset "@2026-11-28": want @ and a Unix timestamp in milliseconds or an RFC 3339 time`},
		{[]string{"produce", "-t", "x", "-o", "yaml"}, `-o "yaml": want text or json`},
	} {
		r := runCLI(t, "", append(tc.args, "--brokers", "127.0.0.1:1")...)
		wantFailure(t, r, 2, tc.re)
	}
}

func TestToolHelp(t *testing.T) {
	for _, args := range [][]string{
		{"produce", "--help"}, {"consume", "-h"}, {"topic", "create", "--help"}, {"topic", "list", "--help"},
		{"topic", "describe", "--help"}, {"topic", "delete", "--help"}, {"topic", "alter-config", "--help"},
		{"group", "list", "--help"}, {"group", "describe", "--help"}, {"group", "delete", "--help"},
		{"group", "reset-offsets", "--help"}, {"cluster", "info", "--help"},
	} {
		r := runCLI(t, "", args...)
		if r.code != 0 || r.stderr != "" {
			t.Errorf("%v: exit %d, stderr %q", args, r.code, r.stderr)
		}
		for _, want := range []string{"Usage: varve " + strings.Join(args[:len(args)-1], " "), "\nExamples:\n", "varve " + strings.Join(args[:len(args)-1], " ") + " ",
			"\nFlags:\n", "  --brokers HOST:PORT,..."} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("%v: help lacks %q:\n%s", args, want, r.stdout)
			}
		}
	}
	r := runCLI(t, "", "group", "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "  reset-offsets  move an empty group's committed offsets") {
		t.Errorf("group --help: exit %d, stdout %q", r.code, r.stdout)
	}
}

// Flags and positional arguments mix; "--" ends the flags.
func TestToolFlagsInterspersed(t *testing.T) {
	fs := newToolFlags("topic create", "varve topic create NAME", "")
	p := fs.Int("p", -1, "")
	pos, err := fs.parse([]string{"-p", "3", "demo", "--brokers", "h:1"}, 1, nil)
	if err != nil || *p != 3 || fs.brokers != "h:1" || len(pos) != 1 || pos[0] != "demo" {
		t.Fatalf("pos %v p %d brokers %q err %v", pos, *p, fs.brokers, err)
	}
	fs = newToolFlags("x", "x", "")
	pos, err = fs.parse([]string{"a", "--", "-b", "c"}, -1, nil)
	if err != nil || strings.Join(pos, " ") != "a -b c" {
		t.Fatalf("pos %q err %v", pos, err)
	}
}

// Piped output is tab-separated with "-" for empty cells; on a terminal
// it is aligned; JSON is indented.
func TestPrinter(t *testing.T) {
	var b bytes.Buffer
	p := &printer{w: &b}
	p.fields([2]string{"name", "demo"}, [2]string{"empty", ""})
	p.table([]string{"A", "LONGER"}, [][]string{{"1", "x\ty"}, {"22", ""}})
	if want := "name\tdemo\nempty\t-\n\nA\tLONGER\n1\tx y\n22\t-\n"; b.String() != want {
		t.Errorf("tab-separated:\n%q\nwant\n%q", b.String(), want)
	}
	b.Reset()
	p = &printer{w: &b, aligned: true}
	p.fields([2]string{"name", "demo"}, [2]string{"replication factor", "3"})
	p.table([]string{"A", "LONGER"}, [][]string{{"1", "x"}, {"22", "yy"}})
	want := "name:                demo\nreplication factor:  3\n\nA   LONGER\n1   x\n22  yy\n"
	if b.String() != want {
		t.Errorf("aligned:\n%q\nwant\n%q", b.String(), want)
	}
	b.Reset()
	p = &printer{w: &b, json: true}
	if err := p.writeJSON(map[string]int{"a": 1}); err != nil || b.String() != "{\n  \"a\": 1\n}\n" {
		t.Errorf("json %q %v", b.String(), err)
	}
}

// An error with newlines still prints as one line.
func TestInvokeToolOneLineErrors(t *testing.T) {
	tools["test-multiline"] = func(context.Context, []string, io.Reader, io.Writer, io.Writer) error {
		return errors.New("first\nsecond")
	}
	defer delete(tools, "test-multiline")
	var out, errb bytes.Buffer
	code := invokeTool(context.Background(), "test-multiline", nil, nil, &out, &errb)
	if code != 1 || errb.String() != "varve test-multiline: first; second\n" {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
}
