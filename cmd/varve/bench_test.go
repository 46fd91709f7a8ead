package main

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/varvelog/varve/client"
	"github.com/varvelog/varve/integration"
)

// benchTable splits the tab-separated output of a text bench run into its
// fields section and its table rows (header first).
func benchTable(t *testing.T, out string) (map[string]string, [][]string) {
	t.Helper()
	head, table, ok := strings.Cut(out, "\n\n")
	if !ok {
		t.Fatalf("bench output without a table:\n%s", out)
	}
	fields := map[string]string{}
	for l := range strings.SplitSeq(head, "\n") {
		k, v, _ := strings.Cut(l, "\t")
		fields[k] = v
	}
	var rows [][]string
	for l := range strings.SplitSeq(strings.TrimSuffix(table, "\n"), "\n") {
		rows = append(rows, strings.Split(l, "\t"))
	}
	return fields, rows
}

func topicExists(t *testing.T, addr, topic string) bool {
	t.Helper()
	out := mustRun(t, "", "topic", "list", "--brokers", addr)
	return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(topic) + `\t`).MatchString(out)
}

// TestBenchAgainstABroker runs every bench mode against one in-process
// broker (and the global --brokers, which needs one too): each verifies
// every record, creates its topic and deletes it unless --keep.
func TestBenchAgainstABroker(t *testing.T) {
	c := integration.NewCluster(t, integration.Brokers(1))
	for _, tc := range []struct {
		name string
		run  func(*testing.T, *integration.Cluster)
	}{
		{"Produce", testBenchProduce},
		{"E2EKeepJSON", testBenchE2EKeepJSON},
		{"ConsumeExistingTopic", testBenchConsumeExistingTopic},
		{"GlobalBrokers", testGlobalBrokers},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, c) })
	}
}

func testBenchProduce(t *testing.T, c *integration.Cluster) {
	out := mustRun(t, "", "bench", "produce", "-n", "3000", "-s", "100", "-p", "3", "--producers", "2", "--rounds", "2", "-z", "snappy", "--brokers", c.Addr())
	fields, rows := benchTable(t, out)
	if fields["mode"] != "produce" || !strings.HasPrefix(fields["workload"], "3000 records of 100 B, acks all, compression snappy, 2 producers") ||
		fields["cluster this"] != c.Addr()+": topic varve-bench (created, 3 partitions, replication factor 1)" {
		t.Errorf("fields %q", fields)
	}
	want := []string{"ROUND", "CLUSTER", "RECORDS", "MB/S", "RECORDS/S", "P50 MS", "P99 MS", "P999 MS", "VERIFIED"}
	if len(rows) != 4 || strings.Join(rows[0], "|") != strings.Join(want, "|") {
		t.Fatalf("rows %q", rows)
	}
	for i, r := range rows[1:3] {
		if r[0] != strconv.Itoa(i+1) || r[1] != "this" || r[2] != "3000" || r[8] != "ok" {
			t.Errorf("round %d: %q", i+1, r)
		}
		for _, cell := range r[3:8] {
			if v, err := strconv.ParseFloat(cell, 64); err != nil || v <= 0 {
				t.Errorf("round %d: cell %q is not a positive number", i+1, cell)
			}
		}
	}
	if rows[3][0] != "median" || rows[3][1] != "this" {
		t.Errorf("median row %q", rows[3])
	}
	if topicExists(t, c.Addr(), "varve-bench") {
		t.Error("the bench's topic survived without --keep")
	}
}

func testBenchE2EKeepJSON(t *testing.T, c *integration.Cluster) {
	out := mustRun(t, "", "bench", "e2e", "-n", "2000", "-s", "64", "-p", "4", "--producers", "2", "--consumers", "3",
		"--rate", "20000", "-t", "kept", "--keep", "-o", "json", "--brokers", c.Addr())
	var rep benchReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if rep.Mode != "e2e" || !rep.Verified || len(rep.Rounds) != 1 || rep.Ratio != nil || rep.Workload.Rate != 20000 ||
		len(rep.Clusters) != 1 || rep.Clusters[0].Partitions != 4 || !rep.Clusters[0].TopicCreated {
		t.Fatalf("report %+v", rep)
	}
	r := rep.Rounds[0]
	if r.Records != 2000 || r.Bytes != 2000*64 || r.Check == nil || r.Check.Seen != 2000 || !r.Check.OK() ||
		r.P50ms <= 0 || r.P999ms < r.P50ms || r.MBPerSec <= 0 {
		t.Fatalf("round %+v check %+v", r, r.Check)
	}
	// 2,000 records at 20,000/s take at least 0.1 s to send.
	if r.Seconds < 0.09 {
		t.Errorf("--rate 20000: 2000 records in %.3fs", r.Seconds)
	}
	if !topicExists(t, c.Addr(), "kept") {
		t.Error("--keep: the topic is gone")
	}
}

// A topic that existed is used as it is, read from where it ended (its
// earlier records are not this run's), and left in place.
func testBenchConsumeExistingTopic(t *testing.T, c *integration.Cluster) {
	out := mustRun(t, "", "bench", "consume", "-n", "1500", "-s", "32", "-p", "9", "--consumers", "2", "-t", "kept", "--brokers", c.Addr())
	fields, rows := benchTable(t, out)
	if fields["cluster this"] != c.Addr()+": topic kept (existing, 4 partitions, replication factor 1)" || fields["latency"] != "Fetch request round trip" {
		t.Errorf("fields %q", fields)
	}
	if len(rows) != 2 || rows[1][2] != "1500" || rows[1][8] != "ok" {
		t.Errorf("rows %q", rows)
	}
	if !topicExists(t, c.Addr(), "kept") {
		t.Error("the bench deleted a topic it did not create")
	}
	// The topic now holds both runs' records.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := c.Admin(t).ListEndOffsets(ctx, "kept")
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	if total != 3500 {
		t.Errorf("topic kept holds %d records, want 2000 + 1500", total)
	}
}

// --vs alternates the clusters (ABBA) and prints the medians of each and
// their ratio, here against franz-go's in-memory kfake.
func TestBenchVsKfake(t *testing.T) {
	c := integration.NewCluster(t, integration.Brokers(1))
	fake, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	fakeAddr := strings.Join(fake.ListenAddrs(), ",")
	out := mustRun(t, "", "bench", "produce", "-n", "2000", "-s", "100", "-p", "2", "--vs", fakeAddr, "--rounds", "2", "--brokers", c.Addr())
	fields, rows := benchTable(t, out)
	if fields["cluster vs"] != fakeAddr+": topic varve-bench (created, 2 partitions, replication factor 1)" {
		t.Errorf("fields %q", fields)
	}
	var order []string
	byLabel := map[string][]string{}
	for _, r := range rows[1:] {
		order = append(order, r[0]+" "+r[1])
		if r[0] == "median" || r[0] == "ratio" {
			byLabel[r[0]+" "+r[1]] = r
		} else if r[8] != "ok" {
			t.Errorf("round %q not verified", r)
		}
	}
	if got := strings.Join(order, ", "); got != "1 this, 1 vs, 2 vs, 2 this, median this, median vs, ratio this/vs" {
		t.Fatalf("rows in order %q:\n%s", got, out)
	}
	// The ratio row is this cluster's median over the other's.
	this, vs, ratioRow := byLabel["median this"], byLabel["median vs"], byLabel["ratio this/vs"]
	for col := 3; col <= 4; col++ {
		a, _ := strconv.ParseFloat(this[col], 64)
		b, _ := strconv.ParseFloat(vs[col], 64)
		got, err := strconv.ParseFloat(ratioRow[col], 64)
		if err != nil || b == 0 || abs(got-a/b) > 0.01+0.01*a/b {
			t.Errorf("column %s: ratio %q, medians %q / %q", rows[0][col], ratioRow[col], this[col], vs[col])
		}
	}
	if topicExists(t, c.Addr(), "varve-bench") {
		t.Error("the topic survived on this cluster")
	}
	r := runCLI(t, "", "topic", "list", "--brokers", fakeAddr)
	if r.code != 0 || strings.Contains(r.stdout, "varve-bench") {
		t.Errorf("the topic survived on kfake: exit %d, %q", r.code, r.stdout)
	}

	// JSON carries the same ratio.
	out = mustRun(t, "", "bench", "e2e", "-n", "500", "-s", "50", "-p", "2", "--vs", fakeAddr, "--rounds", "1", "-o", "json", "--brokers", c.Addr())
	var rep benchReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Ratio == nil || !rep.Verified || len(rep.Rounds) != 2 || rep.Ratio.MBPerSec <= 0 ||
		abs(rep.Ratio.MBPerSec-rep.Median["this"].MBPerSec/rep.Median["vs"].MBPerSec) > 1e-9 {
		t.Errorf("json report %+v", rep)
	}
}

func abs(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}

// A round that lost or duplicated a record fails the run after the
// report, which shows the damage in its VERIFIED column.
func TestBenchVerdictCatchesLoss(t *testing.T) {
	ids := client.NewIDCounts(5)
	for _, id := range []uint64{0, 1, 1, 3, 4} { // 2 lost, 1 twice
		ids.Add(id)
	}
	bad := roundOf(2, "vs", client.BenchResult{Records: 5, Bytes: 500, Elapsed: time.Second, Check: ids.Check(), Verified: true})
	clean := client.NewIDCounts(1)
	clean.Add(0)
	good := roundOf(1, "this", client.BenchResult{Records: 1, Bytes: 100, Elapsed: time.Second, Check: clean.Check(), Verified: true})
	skipped := roundOf(1, "this", client.BenchResult{Records: 1, Bytes: 100, Elapsed: time.Second})

	if err := benchVerdict([]benchRound{good, skipped}); err != nil {
		t.Fatalf("clean rounds: %v", err)
	}
	err := benchVerdict([]benchRound{good, bad})
	if err == nil || err.Error() != "verification failed: round 2 (vs): lost 1 of 5 records (id 2), duplicated 1 (id 1)" {
		t.Fatalf("verdict: %v", err)
	}

	s := benchSettings{bench: client.Bench{Mode: client.BenchProduce, Records: 5, RecordSize: 100, Acks: "all", Compression: "none", Producers: 1, Consumers: 1}}
	rep := buildBenchReport(s, []*benchTarget{{label: "this"}, {label: "vs"}}, []benchRound{good, bad, skipped})
	if rep.Verified {
		t.Error("report says verified")
	}
	var b bytes.Buffer
	printBenchReport(&printer{w: &b}, rep)
	_, rows := benchTable(t, b.String())
	var cells []string
	for _, r := range rows[1:4] {
		cells = append(cells, r[8])
	}
	if got := strings.Join(cells, "|"); got != "ok|LOST 1 DUP 1|skipped" {
		t.Errorf("VERIFIED column %q:\n%s", got, b.String())
	}
}

func TestBenchUsageAndUnreachable(t *testing.T) {
	for _, tc := range []struct {
		args []string
		re   string
	}{
		{[]string{"bench"}, `^varve bench: missing command: one of produce, consume, e2e`},
		{[]string{"bench", "produce", "-s", "10"}, `^varve bench produce: record size 10: want at least 24`},
		{[]string{"bench", "e2e", "--consumers", "0"}, `consumers 0: want at least 1`},
		{[]string{"bench", "consume", "-r", "0"}, `-r 0: want -1 or a replication factor`},
		{[]string{"bench", "produce", "--rounds", "-1"}, `--rounds -1: want at least 1`},
		{[]string{"bench", "produce", "--acks", "2"}, `acks "2": want all, 1 or 0`},
		{[]string{"bench", "e2e", "--no-verify"}, `flag provided but not defined: -no-verify`},
	} {
		wantFailure(t, runCLI(t, "", append(tc.args, "--brokers", "127.0.0.1:1")...), 2, tc.re)
	}
	addr := closedAddr(t)
	wantFailure(t, runCLI(t, "", "bench", "produce", "--brokers", addr), 1,
		`^varve bench produce: no broker reachable at `+regexp.QuoteMeta(addr)+`: .*connection refused\n$`)

	// --vs unreachable: this cluster's topic, already created, is deleted.
	c := integration.NewCluster(t, integration.Brokers(1))
	wantFailure(t, runCLI(t, "", "bench", "produce", "-t", "vs-down", "--vs", addr, "--brokers", c.Addr()), 1,
		`^varve bench produce: --vs: no broker reachable at `+regexp.QuoteMeta(addr))
	if topicExists(t, c.Addr(), "vs-down") {
		t.Error("topic left behind after --vs failed")
	}

	for _, mode := range []string{"produce", "consume", "e2e"} {
		r := runCLI(t, "", "bench", mode, "--help")
		for _, want := range []string{"Usage: varve bench " + mode, "\nExamples:\n", "--vs HOST:PORT,...", "--rounds N", "  --brokers HOST:PORT,..."} {
			if r.code != 0 || !strings.Contains(r.stdout, want) {
				t.Errorf("bench %s --help: exit %d, lacks %q:\n%s", mode, r.code, want, r.stdout)
			}
		}
	}
}
