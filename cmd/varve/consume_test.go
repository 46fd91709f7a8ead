package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/varvelog/varve/integration"
)

func testConsumeUnknownTopic(t *testing.T, c *integration.Cluster) {
	start := time.Now()
	r := runCLI(t, "", "consume", "-t", "no-such-topic", "-e", "--brokers", c.Addr())
	wantFailure(t, r, 1, `^varve consume: unknown topic "no-such-topic"\n$`)
	r = runCLI(t, "", "consume", "-g", "g", "-t", "no-such-topic", "--brokers", c.Addr())
	wantFailure(t, r, 1, `^varve consume: unknown topic "no-such-topic"\n$`)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("unknown topic took %v", d)
	}
}

// With -g, consume starts at the group's commit (-o only without one)
// and commits exactly the records it printed.
func testConsumeAsGroup(t *testing.T, c *integration.Cluster) {
	b := c.Addr()
	createTopic(t, c, "grouped", 2)
	mustRun(t, "a:1\nb:2\nc:3\nd:4\ne:5\nf:6\n", "produce", "-t", "grouped", "-k", ":", "--brokers", b)
	committed := func(group string) int64 {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		offs, err := c.Admin(t).FetchOffsets(ctx, group)
		if err != nil {
			t.Fatalf("fetch offsets: %v", err)
		}
		var sum int64
		offs.Each(func(o kadm.OffsetResponse) {
			if o.At > 0 {
				sum += o.At
			}
		})
		return sum
	}

	out := mustRun(t, "", "consume", "-g", "cg-n", "-t", "grouped", "-n", "2", "--brokers", b)
	if lines := countLines(out); lines != 2 {
		t.Fatalf("-n 2 printed %q", out)
	}
	if got := committed("cg-n"); got != 2 {
		t.Errorf("after -n 2 the group committed %d records, want 2", got)
	}
	out = mustRun(t, "", "consume", "-g", "cg-n", "-t", "grouped", "-e", "--brokers", b)
	if lines := countLines(out); lines != 4 {
		t.Errorf("the rest after the commit: %q, want 4 records", out)
	}
	if got := committed("cg-n"); got != 6 {
		t.Errorf("after -e the group committed %d records, want 6", got)
	}
	if out := mustRun(t, "", "consume", "-g", "cg-n", "-t", "grouped", "-e", "--brokers", b); out != "" {
		t.Errorf("a group at the end printed %q", out)
	}
	// Without a commit, -o decides: end means nothing to print.
	if out := mustRun(t, "", "consume", "-g", "cg-end", "-t", "grouped", "-o", "end", "-e", "--brokers", b); out != "" {
		t.Errorf("-o end printed %q", out)
	}
}

func countLines(s string) int {
	n := 0
	for _, c := range s {
		if c == '\n' {
			n++
		}
	}
	return n
}

// Without -e or -n, consume follows: it prints what is there, then what
// is produced later, until its context ends (^C), and exits 0.
func testConsumeFollows(t *testing.T, c *integration.Cluster) {
	b := c.Addr()
	createTopic(t, c, "follow", 2)
	mustRun(t, "k1:old\n", "produce", "-t", "follow", "-k", ":", "--brokers", b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb lockedBuffer
	code := make(chan int, 1)
	go func() {
		code <- invokeTool(ctx, "consume", []string{"-t", "follow", "-k", ":", "--brokers", b}, strings.NewReader(""), &out, &errb)
	}()
	waitOutput := func(want string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for out.String() != want {
			if time.Now().After(deadline) {
				t.Fatalf("consume printed %q, want %q (stderr %q)", out.String(), want, errb.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitOutput("k1:old\n")
	mustRun(t, "k1:new\n", "produce", "-t", "follow", "-k", ":", "--brokers", b)
	waitOutput("k1:old\nk1:new\n")
	select {
	case c := <-code:
		t.Fatalf("consume exited (%d) while following", c)
	default:
	}
	cancel() // what ^C does
	if c := <-code; c != 0 || errb.String() != "" || out.String() != "k1:old\nk1:new\n" {
		t.Errorf("after ^C: exit %d, stdout %q, stderr %q", c, out.String(), errb.String())
	}
}

// acks=0 and snappy: the records arrive as sent (read with -n, which
// waits for them: acks=0 returns before the broker has appended).
func testProduceAcksZeroSnappy(t *testing.T, c *integration.Cluster) {
	b := c.Addr()
	createTopic(t, c, "acks0", 1)
	r := runCLI(t, "one\ntwo\nthree\n", "produce", "-t", "acks0", "--acks", "0", "-z", "snappy", "--brokers", b)
	if r.code != 0 || !strings.HasPrefix(r.stderr, "produced 3 records, 11 bytes in ") {
		t.Fatalf("produce --acks 0: exit %d, stderr %q", r.code, r.stderr)
	}
	if out := mustRun(t, "", "consume", "-t", "acks0", "-n", "3", "-f", `%o:%s `, "--brokers", b); out != "0:one 1:two 2:three " {
		t.Errorf("consumed %q", out)
	}
}
