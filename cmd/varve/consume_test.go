package main

import (
	"context"
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
