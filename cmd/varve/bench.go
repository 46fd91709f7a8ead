package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varvelog/varve/client"
)

// The bench tool: one workload (client.Bench) run in rounds against this
// cluster and, with --vs, alternately against another, then a table of
// the rounds, the medians and their ratio. Every round reads back what it
// produced and checks that every record id arrived exactly once; a round
// that lost or duplicated a record makes the exit code non-zero.

const benchExamples = `  varve bench produce                                  # 100,000 records of 1 KiB to topic varve-bench (12 partitions)
  varve bench produce -n 1000000 -s 100 --producers 4 -z lz4 --acks 1
  varve bench consume -r 3 --consumers 3 -o json
  varve bench e2e -p 6 -n 50000 --rate 5000            # latency at a steady 5,000 records/s
  varve bench produce --vs 127.0.0.1:19092 --rounds 5  # alternate with another cluster; ratio of the medians
`

// runBench is varve bench: produce, consume, e2e.
func runBench(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	return runSub(ctx, "bench", []subcommand{
		{"produce", "time producing: MB/s, records/s, latency from send to acknowledgement; then read back and verify", benchTool(client.BenchProduce)},
		{"consume", "produce (untimed), then time consuming: MB/s, records/s, Fetch round trips; verify", benchTool(client.BenchConsume)},
		{"e2e", "produce and consume at once: MB/s, records/s, latency from send to receipt; verify", benchTool(client.BenchE2E)},
	}, args, stdin, stdout, stderr)
}

// benchLatencyMeaning says what a mode's latency column measures.
var benchLatencyMeaning = map[client.BenchMode]string{
	client.BenchProduce: "send to acknowledgement (includes time queued in the client)",
	client.BenchConsume: "Fetch request round trip",
	client.BenchE2E:     "send to receipt by a consumer",
}

// benchSettings are the command line of one bench run.
type benchSettings struct {
	bench      client.Bench
	partitions int
	rf         int
	vs         string
	rounds     int
	keep       bool
	timeout    time.Duration
}

func benchTool(mode client.BenchMode) toolFunc {
	return func(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
		name := "bench " + string(mode)
		fs := newToolFlags(name, "varve "+name+" [-n RECORDS] [-s BYTES] [-p PARTITIONS] [-r RF] [--acks all|1|0] [-z CODEC] "+
			"[--rate N] [--producers N] [--consumers N] [-t TOPIC] [--keep] [--vs HOST:PORT,... [--rounds N]] [-o text|json]", benchExamples).withOutput()
		s := benchSettings{bench: client.Bench{Mode: mode}}
		fs.IntVar(&s.bench.Records, "n", 100_000, "`RECORDS` per round, over all producers")
		fs.IntVar(&s.bench.RecordSize, "s", 1024, fmt.Sprintf("record value size in `BYTES` (at least %d: run nonce, id, send time; the rest random)", client.BenchHeaderSize))
		fs.IntVar(&s.partitions, "p", 12, "`PARTITIONS` of the topic if the bench creates it")
		fs.IntVar(&s.rf, "r", -1, "replication factor `RF` of the topic if the bench creates it (-1: the broker's default)")
		fs.StringVar(&s.bench.Acks, "acks", "all", "`acks`: all, 1 or 0")
		fs.StringVar(&s.bench.Compression, "z", "none", "compression `codec`: none, gzip, snappy, lz4 or zstd")
		fs.IntVar(&s.bench.Rate, "rate", 0, "send at most `RECORDS_PER_SEC` over all producers (0: as fast as possible, when latency is mostly time queued in the client)")
		fs.IntVar(&s.bench.Producers, "producers", 1, "`N` producer clients, each sending its share of the records")
		fs.IntVar(&s.bench.Consumers, "consumers", 1, "`N` consumer clients, each reading every N-th partition (no more than the partitions)")
		fs.StringVar(&s.bench.Topic, "t", "varve-bench", "`TOPIC` to use; created if absent, and then deleted at the end unless --keep")
		fs.BoolVar(&s.keep, "keep", false, "keep the topic if the bench created it")
		fs.StringVar(&s.vs, "vs", "", "another cluster's seed brokers `HOST:PORT,...`: run the same workload there in alternating rounds and print the ratio of the medians (this / other)")
		fs.IntVar(&s.rounds, "rounds", 0, "`N` rounds per cluster (default 1, or 3 with --vs)")
		fs.DurationVar(&s.timeout, "timeout", 5*time.Minute, "give up on a round after this long")
		if mode == client.BenchProduce {
			fs.BoolVar(&s.bench.SkipVerify, "no-verify", false, "do not read the records back to verify them")
		}
		if _, err := fs.parse(args, 0, stdout); err != nil {
			return helped(err)
		}
		if err := s.validate(); err != nil {
			return err
		}
		return runBenchRounds(ctx, fs, s, stdout, stderr)
	}
}

func (s *benchSettings) validate() error {
	if s.rounds == 0 {
		s.rounds = 1
		if s.vs != "" {
			s.rounds = 3
		}
	}
	switch {
	case s.rounds < 1:
		return usagef("--rounds %d: want at least 1", s.rounds)
	case s.partitions < 1:
		return usagef("-p %d: want at least 1", s.partitions)
	case s.rf < -1 || s.rf == 0 || s.rf > 1<<15-1:
		return usagef("-r %d: want -1 or a replication factor of at least 1", s.rf)
	case s.timeout <= 0:
		return usagef("--timeout %v: want a positive duration", s.timeout)
	}
	if err := s.bench.Validate(); err != nil {
		return usageError{err}
	}
	return nil
}

// benchTarget is a cluster the bench runs against, its topic ready.
type benchTarget struct {
	label   string // "this" or "vs"
	cfg     client.Config
	topic   kadm.TopicDetail
	created bool
}

// benchRound is one round's numbers in the report.
type benchRound struct {
	Round   int     `json:"round"`
	Cluster string  `json:"cluster"` // this or vs
	Records int64   `json:"records"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	benchNumbers
	Verified bool            `json:"verified"`
	Check    *client.IDCheck `json:"check,omitempty"`
}

// benchNumbers are what rounds are compared by.
type benchNumbers struct {
	MBPerSec      float64 `json:"mb_per_s"`
	RecordsPerSec float64 `json:"records_per_s"`
	P50ms         float64 `json:"p50_ms"`
	P99ms         float64 `json:"p99_ms"`
	P999ms        float64 `json:"p999_ms"`
}

// benchReport is the whole run, as -o json prints it.
type benchReport struct {
	Mode     string                  `json:"mode"`
	Workload benchWorkload           `json:"workload"`
	Latency  string                  `json:"latency"` // what the p50/p99/p999 measure
	Clusters []benchCluster          `json:"clusters"`
	Rounds   []benchRound            `json:"rounds"`
	Median   map[string]benchNumbers `json:"median"`          // by cluster
	Ratio    *benchNumbers           `json:"ratio,omitempty"` // this / vs, of the medians
	Verified bool                    `json:"verified"`        // every round read every id back exactly once
}

type benchWorkload struct {
	Records     int    `json:"records"`
	RecordSize  int    `json:"record_size"`
	Acks        string `json:"acks"`
	Compression string `json:"compression"`
	Producers   int    `json:"producers"`
	Consumers   int    `json:"consumers"`
	Rate        int    `json:"rate"` // records/s over all producers; 0: no limit
}

type benchCluster struct {
	Label             string   `json:"label"`
	Brokers           []string `json:"brokers"`
	Topic             string   `json:"topic"`
	Partitions        int      `json:"partitions"`
	ReplicationFactor int      `json:"replication_factor"`
	TopicCreated      bool     `json:"topic_created"`
}

func runBenchRounds(ctx context.Context, fs *toolFlags, s benchSettings, stdout, stderr io.Writer) (err error) {
	var targets []*benchTarget
	defer func() {
		err = errors.Join(err, cleanupBenchTopics(ctx, targets, s))
	}()
	cfg := client.DefaultConfig()
	cfg.Brokers = fs.brokerList(ctx)
	if len(cfg.Brokers) == 0 {
		return usagef("--brokers is empty")
	}
	clusters := []struct {
		label string
		cfg   client.Config
	}{{"this", cfg}}
	if s.vs != "" {
		vcfg := client.DefaultConfig()
		vcfg.Brokers = client.ParseBrokers(s.vs)
		clusters = append(clusters, struct {
			label string
			cfg   client.Config
		}{"vs", vcfg})
	}
	for _, c := range clusters {
		tgt, err := prepareBenchTarget(ctx, c.label, c.cfg, s)
		if tgt != nil {
			targets = append(targets, tgt)
		}
		if err != nil {
			if c.label == "vs" {
				return fmt.Errorf("--vs: %w", err)
			}
			return err
		}
	}

	progress := isTerminal(stderr)
	var rounds []benchRound
	for r := 1; r <= s.rounds; r++ {
		order := slices.Clone(targets)
		if r%2 == 0 {
			slices.Reverse(order) // ABBA: neither cluster always runs first
		}
		for _, tgt := range order {
			rctx, cancel := context.WithTimeout(ctx, s.timeout)
			res, err := client.RunBench(rctx, tgt.cfg, s.bench)
			cancel()
			if err != nil {
				return fmt.Errorf("round %d against %s (%s): %w", r, tgt.label, strings.Join(tgt.cfg.Brokers, ","), err)
			}
			round := roundOf(r, tgt.label, res)
			rounds = append(rounds, round)
			if progress {
				fmt.Fprintf(stderr, "round %d/%d %s: %.2f MB/s, %.0f records/s, p99 %s ms\n", r, s.rounds, tgt.label,
					round.MBPerSec, round.RecordsPerSec, fmtMS(round.P99ms))
			}
		}
	}
	rep := buildBenchReport(s, targets, rounds)
	p := fs.printer(stdout)
	if p.json {
		if err := p.writeJSON(rep); err != nil {
			return err
		}
	} else {
		printBenchReport(p, rep)
	}
	return benchVerdict(rounds)
}

// prepareBenchTarget connects to a cluster and makes sure the topic is
// there and led. It returns the target even on a late error, so a topic
// it created is still deleted.
func prepareBenchTarget(ctx context.Context, label string, cfg client.Config, s benchSettings) (*benchTarget, error) {
	cl, adm, err := client.New(ctx, cfg, kgo.MetadataMinAge(50*time.Millisecond)) // see EnsureTopic
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	td, created, err := client.EnsureTopic(ctx, adm, s.bench.Topic, int32(s.partitions), int16(s.rf))
	if !created && err != nil {
		return nil, err
	}
	return &benchTarget{label: label, cfg: cfg, topic: td, created: created}, err
}

// cleanupBenchTopics deletes the topics the bench created, unless --keep,
// even after ^C.
func cleanupBenchTopics(ctx context.Context, targets []*benchTarget, s benchSettings) error {
	if s.keep {
		return nil
	}
	var errs []error
	for _, tgt := range targets {
		if !tgt.created {
			continue
		}
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		cl, adm, err := client.New(dctx, tgt.cfg)
		if err == nil {
			var resp kadm.DeleteTopicResponses
			resp, err = adm.DeleteTopics(dctx, s.bench.Topic)
			if err == nil {
				err = resp.Error()
			}
			cl.Close()
		}
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("delete topic %q on %s: %w", s.bench.Topic, tgt.label, err))
		}
	}
	return errors.Join(errs...)
}

func roundOf(r int, label string, res client.BenchResult) benchRound {
	round := benchRound{
		Round: r, Cluster: label, Records: res.Records, Bytes: res.Bytes, Seconds: res.Elapsed.Seconds(),
		benchNumbers: benchNumbers{
			MBPerSec: res.MBPerSec(), RecordsPerSec: res.RecordsPerSec(),
			P50ms: ms(res.Latency.Quantile(0.5)), P99ms: ms(res.Latency.Quantile(0.99)), P999ms: ms(res.Latency.Quantile(0.999)),
		},
		Verified: res.Verified,
	}
	if res.Verified {
		check := res.Check
		round.Check = &check
	}
	return round
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func buildBenchReport(s benchSettings, targets []*benchTarget, rounds []benchRound) benchReport {
	b := s.bench
	rep := benchReport{
		Mode: string(b.Mode),
		Workload: benchWorkload{Records: b.Records, RecordSize: b.RecordSize, Acks: b.Acks, Compression: b.Compression,
			Producers: b.Producers, Consumers: b.Consumers, Rate: b.Rate},
		Latency:  benchLatencyMeaning[b.Mode],
		Rounds:   rounds,
		Median:   map[string]benchNumbers{},
		Verified: benchVerdict(rounds) == nil && !b.SkipVerify,
	}
	for _, t := range targets {
		rep.Clusters = append(rep.Clusters, benchCluster{Label: t.label, Brokers: t.cfg.Brokers, Topic: b.Topic,
			Partitions: len(t.topic.Partitions), ReplicationFactor: t.topic.Partitions.NumReplicas(), TopicCreated: t.created})
		var mine []benchNumbers
		for _, r := range rounds {
			if r.Cluster == t.label {
				mine = append(mine, r.benchNumbers)
			}
		}
		rep.Median[t.label] = medianNumbers(mine)
	}
	if this, ok := rep.Median["this"]; ok {
		if vs, ok := rep.Median["vs"]; ok {
			rep.Ratio = &benchNumbers{
				MBPerSec: ratio(this.MBPerSec, vs.MBPerSec), RecordsPerSec: ratio(this.RecordsPerSec, vs.RecordsPerSec),
				P50ms: ratio(this.P50ms, vs.P50ms), P99ms: ratio(this.P99ms, vs.P99ms), P999ms: ratio(this.P999ms, vs.P999ms),
			}
		}
	}
	return rep
}

// medianNumbers takes the median of each number on its own.
func medianNumbers(ns []benchNumbers) benchNumbers {
	pick := func(f func(benchNumbers) float64) float64 {
		vs := make([]float64, len(ns))
		for i, n := range ns {
			vs[i] = f(n)
		}
		return median(vs)
	}
	return benchNumbers{
		MBPerSec:      pick(func(n benchNumbers) float64 { return n.MBPerSec }),
		RecordsPerSec: pick(func(n benchNumbers) float64 { return n.RecordsPerSec }),
		P50ms:         pick(func(n benchNumbers) float64 { return n.P50ms }),
		P99ms:         pick(func(n benchNumbers) float64 { return n.P99ms }),
		P999ms:        pick(func(n benchNumbers) float64 { return n.P999ms }),
	}
}

// median of vs (the mean of the middle two for an even count); 0 for none.
func median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	slices.Sort(vs)
	m := len(vs) / 2
	if len(vs)%2 == 1 {
		return vs[m]
	}
	return (vs[m-1] + vs[m]) / 2
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func printBenchReport(p *printer, rep benchReport) {
	w := rep.Workload
	rate := "as fast as possible"
	if w.Rate > 0 {
		rate = fmt.Sprintf("at most %d records/s", w.Rate)
	}
	fields := [][2]string{
		{"mode", rep.Mode},
		{"workload", fmt.Sprintf("%d records of %d B, acks %s, compression %s, %d producers (%s), %d consumers",
			w.Records, w.RecordSize, w.Acks, w.Compression, w.Producers, rate, w.Consumers)},
		{"latency", rep.Latency},
	}
	for _, c := range rep.Clusters {
		how := "existing"
		if c.TopicCreated {
			how = "created"
		}
		fields = append(fields, [2]string{"cluster " + c.Label, fmt.Sprintf("%s: topic %s (%s, %d partitions, replication factor %d)",
			strings.Join(c.Brokers, ","), c.Topic, how, c.Partitions, c.ReplicationFactor)})
	}
	p.fields(fields...)
	row := func(a, b string, records string, n benchNumbers, verified string) []string {
		return []string{a, b, records, fmt.Sprintf("%.2f", n.MBPerSec), fmt.Sprintf("%.0f", n.RecordsPerSec),
			fmtMS(n.P50ms), fmtMS(n.P99ms), fmtMS(n.P999ms), verified}
	}
	var rows [][]string
	for _, r := range rep.Rounds {
		rows = append(rows, row(strconv.Itoa(r.Round), r.Cluster, strconv.FormatInt(r.Records, 10), r.benchNumbers, verifiedCell(r)))
	}
	if len(rep.Rounds) > 1 {
		for _, c := range rep.Clusters {
			rows = append(rows, row("median", c.Label, "", rep.Median[c.Label], ""))
		}
	}
	if rep.Ratio != nil {
		r := rep.Ratio
		rows = append(rows, []string{"ratio", "this/vs", "", fmt.Sprintf("%.2f", r.MBPerSec), fmt.Sprintf("%.2f", r.RecordsPerSec),
			fmt.Sprintf("%.2f", r.P50ms), fmt.Sprintf("%.2f", r.P99ms), fmt.Sprintf("%.2f", r.P999ms), ""})
	}
	p.table([]string{"ROUND", "CLUSTER", "RECORDS", "MB/S", "RECORDS/S", "P50 MS", "P99 MS", "P999 MS", "VERIFIED"}, rows)
}

func verifiedCell(r benchRound) string {
	switch {
	case !r.Verified || r.Check == nil:
		return "skipped"
	case r.Check.OK():
		return "ok"
	}
	return fmt.Sprintf("LOST %d DUP %d", r.Check.Lost, r.Check.Duplicated+r.Check.Unexpected)
}

// fmtMS prints milliseconds with three significant digits or so.
func fmtMS(v float64) string {
	switch {
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	case v < 100:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// benchVerdict is nil when every verified round read every id back
// exactly once, else one error naming each round that did not.
func benchVerdict(rounds []benchRound) error {
	var errs []error
	for _, r := range rounds {
		if r.Check == nil {
			continue
		}
		if err := r.Check.Err(); err != nil {
			errs = append(errs, fmt.Errorf("round %d (%s): %w", r.Round, r.Cluster, err))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("verification failed: %w", errors.Join(errs...))
}
