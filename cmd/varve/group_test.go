package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varvelog/varve/integration"
)

// commitAt commits offset at for topic/0 as group, through kadm (a
// simple commit: no member, generation -1).
func commitAt(t *testing.T, c *integration.Cluster, group, topic string, at int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var os kadm.Offsets
	os.Add(kadm.Offset{Topic: topic, Partition: 0, At: at, LeaderEpoch: -1})
	resps, err := c.Admin(t).CommitOffsets(ctx, group, os)
	if err == nil {
		err = resps.Error()
	}
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
}

// committedAt is group's committed offset of topic/0 (-1: none).
func committedAt(t *testing.T, c *integration.Cluster, group, topic string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	offs, err := c.Admin(t).FetchOffsets(ctx, group)
	if err != nil {
		t.Fatalf("fetch offsets: %v", err)
	}
	if o, ok := offs.Lookup(topic, 0); ok {
		return o.At
	}
	return -1
}

func testGroupDescribeLag(t *testing.T, c *integration.Cluster) {
	b := c.Addr()
	createTopic(t, c, "lagged", 1)
	mustRun(t, "r0\nr1\nr2\n", "produce", "-t", "lagged", "--brokers", b)
	commitAt(t, c, "g-lag", "lagged", 1)

	out := mustRun(t, "", "group", "describe", "g-lag", "--brokers", b)
	want := "group\tg-lag\nstate\tEmpty\nprotocol\t-\ncoordinator\t1\nmembers\t0\ntotal lag\t2\n\n" +
		"TOPIC\tPARTITION\tCOMMITTED\tLOG-END\tLAG\tMEMBER\tERROR\nlagged\t0\t1\t3\t2\t-\t-\n"
	if out != want {
		t.Errorf("describe:\n%s\nwant\n%s", out, want)
	}
	var d groupDescription
	if err := json.Unmarshal([]byte(mustRun(t, "", "group", "describe", "g-lag", "-o", "json", "--brokers", b)), &d); err != nil {
		t.Fatal(err)
	}
	if d.Group != "g-lag" || d.State != "Empty" || d.TotalLag != 2 || len(d.Offsets) != 1 || *d.Offsets[0].Committed != 1 ||
		*d.Offsets[0].Lag != 2 || d.Offsets[0].LogEnd != 3 || len(d.Members) != 0 {
		t.Errorf("describe -o json: %+v", d)
	}
	if out := mustRun(t, "", "group", "list", "--brokers", b); !strings.HasPrefix(out, "GROUP\tSTATE\tPROTOCOL-TYPE\tCOORDINATOR\n") ||
		!strings.Contains(out, "\ng-lag\tEmpty\t-\t1\n") {
		t.Errorf("list:\n%s", out)
	}
	wantFailure(t, runCLI(t, "", "group", "describe", "no-such-group", "--brokers", b), 1,
		`^varve group describe: group "no-such-group" does not exist\n$`)

	// A member joins: describe shows it with its assignment.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cl := c.Client(t, kgo.ConsumerGroup("g-live"), kgo.ConsumeTopics("lagged"), kgo.ClientID("live-test"))
	go func() {
		for ctx.Err() == nil {
			cl.PollFetches(ctx)
		}
	}()
	waitStable(t, c, "g-live")
	out = mustRun(t, "", "group", "describe", "g-live", "--brokers", b)
	if !strings.Contains(out, "state\tStable\nprotocol\tconsumer/") || !strings.Contains(out, "members\t1\n") ||
		!strings.Contains(out, "\tlive-test\t") || !strings.Contains(out, "\tlagged:0\n") {
		t.Errorf("describe of a live group:\n%s", out)
	}
	// It is not empty: reset-offsets refuses, even as a dry run.
	wantFailure(t, runCLI(t, "", "group", "reset-offsets", "g-live", "-t", "lagged", "--to-earliest", "--brokers", b), 1,
		`^varve group reset-offsets: group "g-live" is Stable with 1 members: offsets can only be reset while it is empty`)
	wantFailure(t, runCLI(t, "", "group", "delete", "g-live", "--brokers", b), 1, `^varve group delete: delete group "g-live": NON_EMPTY_GROUP`)
}

// waitStable waits until group has a member and a completed generation.
func waitStable(t *testing.T, c *integration.Cluster, group string) {
	t.Helper()
	adm := c.Admin(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ds, err := adm.DescribeGroups(ctx, group)
		cancel()
		if err == nil && ds[group].State == "Stable" && len(ds[group].Members) == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s not stable: %v %+v", group, err, ds[group])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func testGroupResetOffsets(t *testing.T, c *integration.Cluster) {
	b := c.Addr()
	commitAt(t, c, "g-reset", "lagged", 1)
	r := runCLI(t, "", "group", "reset-offsets", "g-reset", "-t", "lagged", "--to-earliest", "--brokers", b)
	if r.code != 0 || r.stdout != "TOPIC\tPARTITION\tCURRENT\tNEW\nlagged\t0\t1\t0\n" ||
		r.stderr != "dry run: nothing committed (add --execute to commit these offsets)\n" {
		t.Errorf("dry run: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	if got := committedAt(t, c, "g-reset", "lagged"); got != 1 {
		t.Errorf("a dry run moved the commit to %d", got)
	}
	for _, tc := range []struct {
		args      []string
		from, new int64
	}{
		{[]string{"--to-latest"}, 1, 3},
		{[]string{"--to-earliest"}, 3, 0},
		{[]string{"--to-offset", "2"}, 0, 2},
		{[]string{"--to-offset", "99"}, 2, 3}, // clamped to the end
		{[]string{"--to-time", "0"}, 3, 0},
		{[]string{"--to-time", "99999999999999"}, 0, 3},
		{[]string{"--to-time", "-1h"}, 3, 0},
		{[]string{"--to-time", time.Now().Add(time.Hour).Format(time.RFC3339)}, 0, 3},
		{[]string{"--to-time", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339Nano)}, 3, 0},
	} {
		args := append([]string{"group", "reset-offsets", "g-reset", "-t", "lagged", "--execute", "-o", "json", "--brokers", b}, tc.args...)
		r := runCLI(t, "", args...)
		var got struct {
			Group    string        `json:"group"`
			Executed bool          `json:"executed"`
			Offsets  []offsetReset `json:"offsets"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &got) != nil || r.stderr != "committed new offsets for 1 partitions of group g-reset\n" {
			t.Fatalf("%v: exit %d stdout %q stderr %q", tc.args, r.code, r.stdout, r.stderr)
		}
		if !got.Executed || len(got.Offsets) != 1 || *got.Offsets[0].Current != tc.from || got.Offsets[0].New != tc.new {
			t.Errorf("%v: %+v, want %d -> %d", tc.args, got, tc.from, tc.new)
		}
		if at := committedAt(t, c, "g-reset", "lagged"); at != tc.new {
			t.Errorf("%v: committed %d, want %d", tc.args, at, tc.new)
		}
	}
	wantFailure(t, runCLI(t, "", "group", "reset-offsets", "g-reset", "-t", "nope", "--to-earliest", "--brokers", b), 1,
		`^varve group reset-offsets: unknown topic "nope"\n$`)

	if out := mustRun(t, "", "group", "delete", "g-reset", "--brokers", b); out != "deleted group g-reset\n" {
		t.Errorf("delete: %q", out)
	}
	if got := committedAt(t, c, "g-reset", "lagged"); got != -1 {
		t.Errorf("a deleted group still has offset %d", got)
	}
}
