package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/varvelog/varve/client"
	"github.com/varvelog/varve/integration"
)

// createTopic creates a topic through the CLI and checks its answer.
func createTopic(t *testing.T, c *integration.Cluster, name string, partitions int) {
	t.Helper()
	out := mustRun(t, "", "topic", "create", name, "-p", strconv.Itoa(partitions), "-r", "1", "--brokers", c.Addr())
	if want := fmt.Sprintf("created topic %s (partitions %d, replication factor 1)\n", name, partitions); out != want {
		t.Fatalf("topic create: %q, want %q", out, want)
	}
}

func testProduceThenConsume(t *testing.T, c *integration.Cluster) {
	b := c.Addr()
	createTopic(t, c, "keyed", 1)
	r := runCLI(t, "k1:v1\nk2:v2\nk3:v3\n", "produce", "-t", "keyed", "-k", ":", "--brokers", b)
	if r.code != 0 || r.stdout != "" {
		t.Fatalf("produce: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if !regexp.MustCompile(`^produced 3 records, 12 bytes in \S+ \(\d+\.\d\d MB/s\)\n$`).MatchString(r.stderr) {
		t.Errorf("produce summary %q", r.stderr)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-e", "-f", `%k=%s@%p/%o\n`}, "k1=v1@0/0\nk2=v2@0/1\nk3=v3@0/2\n"},
		{[]string{"-e"}, "v1\nv2\nv3\n"},
		{[]string{"-n", "2"}, "v1\nv2\n"},
		{[]string{"-o", "1", "-e"}, "v2\nv3\n"},
		{[]string{"-o", "-1", "-e"}, "v3\n"},
		{[]string{"-o", "end", "-e"}, ""},
		{[]string{"-o", "-1h", "-e", "-f", `%t\t%K:%S %%\n`}, "keyed\t2:2 %\nkeyed\t2:2 %\nkeyed\t2:2 %\n"},
		{[]string{"-o", "@" + strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10), "-e"}, ""},
		{[]string{"-o", "@" + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), "-e"}, "v1\nv2\nv3\n"},
		{[]string{"-o", "@" + time.Now().Add(time.Hour).Format(time.RFC3339Nano), "-e"}, ""},
		{[]string{"-e", "-k", " => "}, "k1 => v1\nk2 => v2\nk3 => v3\n"},
		{[]string{"-p", "0", "-e", "-f", `%o `}, "0 1 2 "},
	} {
		r := runCLI(t, "", append([]string{"consume", "-t", "keyed", "--brokers", b}, tc.args...)...)
		if r.code != 0 || r.stdout != tc.want || r.stderr != "" {
			t.Errorf("consume %v: exit %d, stdout %q (want %q), stderr %q", tc.args, r.code, r.stdout, tc.want, r.stderr)
		}
	}
	// A line without the separator has no key; an empty line is an empty value.
	mustRun(t, "plain\n\nk4:v:4", "produce", "-t", "keyed", "-k", ":", "--brokers", b)
	out := mustRun(t, "", "consume", "-t", "keyed", "-o", "3", "-e", "-f", `[%k|%s]`, "--brokers", b)
	if out != "[|plain][|][k4|v:4]" {
		t.Errorf("consume after unkeyed lines: %q", out)
	}
	// consume -k prints what produce -k reads: the lines come back as
	// they went in (a line without a key gains the separator in front).
	out = mustRun(t, "", "consume", "-t", "keyed", "-e", "-k", ":", "--brokers", b)
	if out != "k1:v1\nk2:v2\nk3:v3\n:plain\n:\nk4:v:4\n" {
		t.Errorf("consume -k: %q", out)
	}
}

// Keyed records land where the Java client would put them (murmur2);
// -p pins every record to one partition.
func testProduceKeyedPartitions(t *testing.T, c *integration.Cluster) {
	b := c.Addr()
	createTopic(t, c, "spread", 4)
	var in strings.Builder
	for i := range 40 {
		fmt.Fprintf(&in, "key-%d=value-%d\n", i, i)
	}
	mustRun(t, in.String(), "produce", "-t", "spread", "-k", "=", "-z", "lz4", "--brokers", b)
	out := mustRun(t, "", "consume", "-t", "spread", "-e", "-f", `%k %p\n`, "--brokers", b)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 40 {
		t.Fatalf("consumed %d records, want 40:\n%s", len(lines), out)
	}
	used := map[string]bool{}
	for _, l := range lines {
		key, p, _ := strings.Cut(l, " ")
		if want := strconv.Itoa(client.KeyPartition([]byte(key), 4)); p != want {
			t.Errorf("key %s in partition %s, murmur2 says %s", key, p, want)
		}
		used[p] = true
	}
	if len(used) < 2 {
		t.Errorf("40 keys all in partitions %v", used)
	}
	// The Java client's partitions for these keys among 1,000 partitions
	// are 681, 524, 434, 107, 566 and 742 (client.TestKeyPartitionMatchesJavaPartitions);
	// 8 divides 1,000, so among 8 they are those mod 8.
	createTopic(t, c, "java8", 8)
	mustRun(t, ":empty\na:a\nab:ab\nabc:abc\n123456789:digits\n\x00 :nul\n", "produce", "-t", "java8", "-k", ":", "--brokers", b)
	lines = strings.Split(strings.TrimSpace(mustRun(t, "", "consume", "-t", "java8", "-e", "-f", `%s=%p\n`, "--brokers", b)), "\n")
	slices.Sort(lines)
	if got, want := strings.Join(lines, " "), "a=4 ab=2 abc=3 digits=6 empty=1 nul=6"; got != want {
		t.Errorf("keys in partitions %s, the Java client puts them in %s", got, want)
	}

	mustRun(t, "a:1\nb:2\nc:3\n", "produce", "-t", "spread", "-k", ":", "-p", "2", "--acks", "1", "-z", "gzip", "--brokers", b)
	out = mustRun(t, "", "consume", "-t", "spread", "-p", "2", "-o", "-3", "-e", "-f", `%k%p `, "--brokers", b)
	if out != "a2 b2 c2 " {
		t.Errorf("-p 2: %q", out)
	}
}

func testProduceHeadersConsumeJSON(t *testing.T, c *integration.Cluster) {
	b := c.Addr()
	createTopic(t, c, "json", 1)
	before := time.Now().Add(-time.Second).UnixMilli()
	mustRun(t, "k|v\nnokey\n", "produce", "-t", "json", "-k", "|", "-H", "a=1", "-H", "b=x=y", "-z", "zstd", "--brokers", b)
	after := time.Now().Add(time.Second).UnixMilli()
	out := mustRun(t, "", "consume", "-t", "json", "-e", "--json", "--brokers", b)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("--json: %d lines, want 2:\n%s", len(lines), out)
	}
	headers := []any{map[string]any{"key": "a", "value": "1"}, map[string]any{"key": "b", "value": "x=y"}}
	for i, want := range []map[string]any{
		{"topic": "json", "partition": 0.0, "offset": 0.0, "key": "k", "value": "v", "headers": headers},
		{"topic": "json", "partition": 0.0, "offset": 1.0, "key": nil, "value": "nokey", "headers": headers},
	} {
		var got map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &got); err != nil {
			t.Fatalf("line %d %q: %v", i, lines[i], err)
		}
		ts, ok := got["timestamp"].(float64)
		if !ok || int64(ts) < before || int64(ts) > after {
			t.Errorf("line %d: timestamp %v, want within [%d, %d]", i, got["timestamp"], before, after)
		}
		delete(got, "timestamp")
		if !reflect.DeepEqual(got, want) {
			t.Errorf("line %d: %v, want %v (and a timestamp)", i, got, want)
		}
	}
	out = mustRun(t, "", "consume", "-t", "json", "-n", "1", "-f", `%h %T`, "--brokers", b)
	h, ts, _ := strings.Cut(out, " ")
	if n, err := strconv.ParseInt(ts, 10, 64); h != "a=1,b=x=y" || err != nil || n < before || n > after {
		t.Errorf("-f '%%h %%T': %q", out)
	}
}

// Unknown topic and partition fail before anything is sent; a record
// the client refuses fails the run with the first error after the
// summary.
func testProduceFailures(t *testing.T, c *integration.Cluster) {
	b := c.Addr()
	wantFailure(t, runCLI(t, "x\n", "produce", "-t", "nope", "--brokers", b), 1, `^varve produce: unknown topic "nope"\n$`)
	createTopic(t, c, "small", 1)
	wantFailure(t, runCLI(t, "x\n", "produce", "-t", "small", "-p", "1", "--brokers", b), 1,
		`^varve produce: topic "small" has no partition 1 \(it has 1\)\n$`)

	huge := strings.Repeat("x", 2<<20) // over kgo's 1 MiB batch limit
	r := runCLI(t, "ok\n"+huge+"\n", "produce", "-t", "small", "--brokers", b)
	if r.code != 1 || r.stdout != "" {
		t.Fatalf("oversized record: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	if len(lines) != 2 || !regexp.MustCompile(`^produced 1 records, 2 bytes in .*; 1 failed$`).MatchString(lines[0]) ||
		!strings.HasPrefix(lines[1], "varve produce: 1 of 2 records failed, first: ") {
		t.Errorf("stderr %q: want the summary, then the first error", r.stderr)
	}
	if out := mustRun(t, "", "consume", "-t", "small", "-e", "--brokers", b); out != "ok\n" {
		t.Errorf("after the failure the topic holds %q", out)
	}
}

// -o json prints the summary as JSON on stdout and nothing on stderr.
func testProduceJSONSummary(t *testing.T, c *integration.Cluster) {
	createTopic(t, c, "summary", 1)
	r := runCLI(t, "ab\ncde\nf", "produce", "-t", "summary", "-o", "json", "--brokers", c.Addr())
	var sum produceSummary
	if r.code != 0 || r.stderr != "" || json.Unmarshal([]byte(r.stdout), &sum) != nil {
		t.Fatalf("produce -o json: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if sum.Records != 3 || sum.Bytes != 6 || sum.Failed != 0 || sum.ElapsedMS < 0 || sum.MBPerSec < 0 {
		t.Errorf("produce -o json: %+v, want 3 records of 6 bytes, none failed", sum)
	}
	if out := mustRun(t, "", "consume", "-t", "summary", "-e", "--brokers", c.Addr()); out != "ab\ncde\nf\n" {
		t.Errorf("the topic holds %q", out)
	}
}

// lockedBuffer is a bytes.Buffer that a tool writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The progress line (what a terminal gets, here with short intervals)
// counts the records sent and acknowledged while stdin is still open,
// rewrites itself with a carriage return, and is erased before the
// summary.
func testProduceProgress(t *testing.T, c *integration.Cluster) {
	createTopic(t, c, "progress", 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl, _, err := client.New(ctx, client.Config{Brokers: []string{c.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var stderr, stdout lockedBuffer
	pr := produceRun{cl: cl, lines: lineRecord{topic: "progress", partition: -1}, stdout: &stdout, stderr: &stderr,
		progress: progressTimes{after: 0, every: 5 * time.Millisecond}}
	in, feed := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- pr.produce(ctx, in) }()

	if _, err := io.WriteString(feed, strings.Repeat("x\n", 100)); err != nil {
		t.Fatal(err)
	}
	mid := regexp.MustCompile(`\r100 records sent, 100 acknowledged, 0\.0 MB \(\d+ records/s, \d+\.\d\d MB/s\) in \d+s\x1b\[K`)
	deadline := time.Now().Add(30 * time.Second)
	for !mid.MatchString(stderr.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("no progress line for 100 records acknowledged with stdin open: %q", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := io.WriteString(feed, strings.Repeat("y\n", 50)); err != nil {
		t.Fatal(err)
	}
	_ = feed.Close()
	if err := <-done; err != nil {
		t.Fatalf("produce: %v", err)
	}
	out := stderr.String()
	lines := regexp.MustCompile(`^(\r\d+ records sent, \d+ acknowledged, [^\r\n]*\x1b\[K)+\r\x1b\[Kproduced 150 records, 150 bytes in \S+ \(\d+\.\d\d MB/s\)\n$`)
	if !lines.MatchString(out) || stdout.String() != "" {
		t.Errorf("stderr %q (stdout %q): want progress lines, each rewriting the last, erased before the summary", out, stdout.String())
	}
	if got := mustRun(t, "", "consume", "-t", "progress", "-e", "-f", "%s", "--brokers", c.Addr()); got != strings.Repeat("x", 100)+strings.Repeat("y", 50) {
		t.Errorf("the topic holds %q", got)
	}
}
