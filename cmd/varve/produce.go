package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varvelog/varve/client"
)

const produceExamples = `  printf 'hello\nworld\n' | varve produce -t demo
  printf 'k1:v1\nk2:v2\n' | varve produce -t demo -k :          # key before the first ':'
  varve produce -t demo -H source=cli -H env=dev -p 0 --acks 1 -z zstd < lines.txt
  seq 1000000 | varve produce -t demo -o json                    # the summary as JSON on stdout
`

// On a terminal, produce shows a progress line on stderr once a run has
// lasted progressAfter, rewritten every progressEvery; a short run prints
// only its summary, and a piped stderr never gets one.
const (
	progressAfter = time.Second
	progressEvery = 250 * time.Millisecond
)

// runProduce is varve produce: every line of stdin (without its newline)
// becomes one record. Records are sent asynchronously and batched; the
// summary (records, bytes, elapsed, MB/s) goes to stderr at the end (with
// -o json: to stdout, as JSON), and the first failure, if any, makes the
// exit code non-zero. On a terminal a progress line shows how far a long
// run has got.
func runProduce(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newToolFlags("produce", "varve produce -t TOPIC [-k SEP] [-H key=value ...] [-p PARTITION] [--acks all|1|0] [-z CODEC] [-o text|json]", produceExamples)
	fs.StringVar(&fs.output, "o", "text", "summary `text|json`: text is a line on stderr, json an object on stdout (records, bytes, failed, elapsed_ms, mb_per_s)")
	topic := fs.String("t", "", "`TOPIC` to produce to (required)")
	keySep := fs.String("k", "", "key separator `SEP`: the part of a line before its first SEP is the key (lines without SEP have no key)")
	var headerList stringList
	fs.Var(&headerList, "H", "header `key=value` added to every record (repeatable)")
	partition := fs.Int("p", -1, "produce every record to this `PARTITION` (default: murmur2 of the key as the Java client, sticky without a key)")
	acks := fs.String("acks", "all", "`acks`: all, 1 or 0")
	codec := fs.String("z", "none", "compression `codec`: none, gzip, snappy, lz4 or zstd")
	if _, err := fs.parse(args, 0, stdout); err != nil {
		return helped(err)
	}
	if *topic == "" {
		return usagef("-t TOPIC is required")
	}
	headerKVs, err := keyValues("-H", headerList)
	if err != nil {
		return err
	}
	var headers []kgo.RecordHeader
	for _, kv := range headerKVs {
		headers = append(headers, kgo.RecordHeader{Key: kv[0], Value: []byte(kv[1])})
	}
	opts, err := client.ProducerOpts(*acks, *codec)
	if err != nil {
		return usageError{err}
	}
	if *partition >= 0 {
		opts = append(opts, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	}
	cl, adm, err := fs.connect(ctx, opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	td, err := client.Topic(ctx, adm, *topic)
	if err != nil {
		return err
	}
	if *partition >= len(td.Partitions) {
		return fmt.Errorf("topic %q has no partition %d (it has %d)", *topic, *partition, len(td.Partitions))
	}

	run := produceRun{
		cl:     cl,
		lines:  lineRecord{topic: *topic, sep: []byte(*keySep), headers: headers, partition: int32(*partition)},
		stdout: stdout, stderr: stderr,
		asJSON: fs.output == "json",
	}
	if isTerminal(stderr) {
		run.progress = progressTimes{after: progressAfter, every: progressEvery}
	}
	return run.produce(ctx, stdin)
}

// produceRun is one run of varve produce.
type produceRun struct {
	cl             *kgo.Client
	lines          lineRecord
	stdout, stderr io.Writer
	asJSON         bool          // the summary as JSON on stdout, not a line on stderr
	progress       progressTimes // zero: no progress line
}

// progressTimes say when the progress line starts and how often it is
// rewritten; every == 0 turns it off.
type progressTimes struct{ after, every time.Duration }

// lineRecord turns a line of stdin into a record.
type lineRecord struct {
	topic     string
	sep       []byte // key separator; nil: no keys
	headers   []kgo.RecordHeader
	partition int32 // -1: the partitioner chooses
}

func (lr lineRecord) record(line []byte) *kgo.Record {
	r := &kgo.Record{Topic: lr.topic, Value: line, Headers: lr.headers}
	if len(lr.sep) > 0 {
		if k, v, found := bytes.Cut(line, lr.sep); found {
			r.Key, r.Value = k, v
		}
	}
	if lr.partition >= 0 {
		r.Partition = lr.partition
	}
	return r
}

// produceStats counts delivery results; kgo calls add from its own
// goroutines.
type produceStats struct {
	mu       sync.Mutex
	ok, bad  int64
	bytes    int64 // keys and values delivered
	firstErr error
}

func (st *produceStats) add(r *kgo.Record, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if err != nil {
		st.bad++
		if st.firstErr == nil {
			st.firstErr = err
		}
		return
	}
	st.ok++
	st.bytes += int64(len(r.Key) + len(r.Value))
}

// produceSummary is the end of a run (-o json prints it as it is).
type produceSummary struct {
	Records   int64   `json:"records"` // acknowledged (sent, with acks=0)
	Bytes     int64   `json:"bytes"`   // their keys and values
	Failed    int64   `json:"failed"`
	ElapsedMS int64   `json:"elapsed_ms"`
	MBPerSec  float64 `json:"mb_per_s"` // 10^6 bytes per second
}

// produce sends every line of stdin, waits for every delivery and
// reports the summary.
func (pr produceRun) produce(ctx context.Context, stdin io.Reader) error {
	st := &produceStats{}
	start := time.Now()
	var sent atomic.Int64
	stopProgress := pr.startProgress(start, &sent, st)
	var readErr error
	lines := readLines(ctx, stdin)
read:
	for {
		var l lineRead
		select {
		case l = <-lines:
		case <-ctx.Done():
			break read
		}
		if l.err != nil {
			if !errors.Is(l.err, io.EOF) {
				readErr = l.err
			}
			break
		}
		pr.cl.Produce(ctx, pr.lines.record(l.line), st.add)
		sent.Add(1)
	}
	// Records already read are delivered even after a ^C, within a bound.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	flushErr := pr.cl.Flush(fctx)
	cancel()
	elapsed := time.Since(start)
	stopProgress()

	st.mu.Lock()
	defer st.mu.Unlock()
	sum := produceSummary{Records: st.ok, Bytes: st.bytes, Failed: st.bad, ElapsedMS: elapsed.Milliseconds()}
	if secs := elapsed.Seconds(); secs > 0 {
		sum.MBPerSec = float64(st.bytes) / 1e6 / secs
	}
	if pr.asJSON {
		p := &printer{w: pr.stdout, json: true}
		if err := p.writeJSON(sum); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(pr.stderr, "produced %d records, %d bytes in %v (%.2f MB/s)", sum.Records, sum.Bytes, elapsed.Round(time.Millisecond), sum.MBPerSec)
		if sum.Failed > 0 {
			fmt.Fprintf(pr.stderr, "; %d failed", sum.Failed)
		}
		fmt.Fprintln(pr.stderr)
	}
	switch {
	case st.firstErr != nil:
		return fmt.Errorf("%d of %d records failed, first: %w", st.bad, st.ok+st.bad, st.firstErr)
	case readErr != nil:
		return fmt.Errorf("read stdin: %w", readErr)
	case flushErr != nil:
		return flushErr
	case ctx.Err() != nil:
		return errors.New("interrupted")
	}
	return nil
}

// startProgress rewrites one line on stderr (carriage return, then
// erase to the end of the line) with the records sent and acknowledged
// so far, from pr.progress.after on, until the returned stop is called;
// stop erases the line, so the summary takes its place.
func (pr produceRun) startProgress(start time.Time, sent *atomic.Int64, st *produceStats) (stop func()) {
	if pr.progress.every <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		tick := time.NewTicker(pr.progress.every)
		defer tick.Stop()
		shown := false
		for {
			select {
			case <-done:
				if shown {
					fmt.Fprint(pr.stderr, "\r\x1b[K")
				}
				return
			case <-tick.C:
			}
			elapsed := time.Since(start)
			if elapsed < pr.progress.after {
				continue
			}
			st.mu.Lock()
			acked, bytes, failed := st.ok, st.bytes, st.bad
			st.mu.Unlock()
			secs := elapsed.Seconds()
			line := fmt.Sprintf("\r%d records sent, %d acknowledged, %.1f MB (%.0f records/s, %.2f MB/s) in %v",
				sent.Load(), acked, float64(bytes)/1e6, float64(acked)/secs, float64(bytes)/1e6/secs, elapsed.Truncate(time.Second))
			if failed > 0 {
				line += fmt.Sprintf(", %d failed", failed)
			}
			fmt.Fprint(pr.stderr, line+"\x1b[K")
			shown = true
		}
	}()
	return func() {
		close(done)
		<-exited
	}
}

// lineRead is one line of stdin without its "\n", or the read's end:
// io.EOF or the read error.
type lineRead struct {
	line []byte
	err  error
}

// readLines reads the lines of r on its own goroutine, so that a ^C ends
// produce even while stdin blocks; the last item carries an error (io.EOF
// at the end). The goroutine stops when ctx ends, or stays blocked in a
// read of r until the process exits.
func readLines(ctx context.Context, r io.Reader) <-chan lineRead {
	out := make(chan lineRead, 256)
	go func() {
		br := bufio.NewReaderSize(r, 64<<10)
		for {
			line, err := br.ReadBytes('\n')
			var items []lineRead
			if len(line) > 0 && line[len(line)-1] == '\n' {
				items = append(items, lineRead{line: line[:len(line)-1]})
			} else if len(line) > 0 {
				items = append(items, lineRead{line: line}) // the last line has no newline
			}
			if err != nil {
				items = append(items, lineRead{err: err})
			}
			for _, it := range items {
				select {
				case out <- it:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return out
}

// helped turns errHelped into success.
func helped(err error) error {
	if errors.Is(err, errHelped) {
		return nil
	}
	return err
}
