package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varvelog/varve/client"
)

const consumeExamples = `  varve consume -t demo -e                             # every record, then exit
  varve consume -t demo -e -k :                        # key:value
  varve consume -t demo -o end                         # follow new records (^C stops)
  varve consume -t demo -o -1h -f '%k=%s @%p/%o\n'     # the last hour, kcat-style
  varve consume -t demo -o @1700000000000 -n 10 --json
  varve consume -t demo -o @2026-11-28T09:00:00Z -e    # from a time (RFC 3339) to the end
  varve consume -g billing -t demo -e                  # as group billing, committing what it prints
`

// runConsume is varve consume. Without -g it reads the partitions
// directly from the position -o names; with -g it joins the group,
// starts where the group committed (-o only for partitions without a
// commit), and commits the records it printed. -e stops once every
// partition read (with -g: assigned to this member) has reached the end
// offset it had when consume started; -n stops after COUNT records.
func runConsume(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newToolFlags("consume", "varve consume -t TOPIC [-g GROUP] [-o OFFSET] [-p PARTITION] [-n COUNT] [-e] [-k SEP | -f FORMAT | --json]", consumeExamples)
	topic := fs.String("t", "", "`TOPIC` to consume (required)")
	group := fs.String("g", "", "consume as consumer `GROUP`, committing the records printed")
	offset := fs.String("o", "beginning", "start `OFFSET`: beginning, end, an offset, -N (N before the end), @UNIX_MS or @RFC3339_TIME, or -DURATION like -1h (with -g: only without a commit)")
	partition := fs.Int("p", -1, "read only this `PARTITION` (not with -g)")
	count := fs.Int("n", 0, "stop after `COUNT` records (0: no limit)")
	exitAtEnd := fs.Bool("e", false, "stop at the end offsets the partitions had at the start")
	format := fs.String("f", "", `kcat-style `+"`FORMAT`"+`: %t topic, %p partition, %o offset, %k key, %s value, %T timestamp ms, %h headers, %K %S lengths, \n \t (default: the value and a newline)`)
	asJSON := fs.Bool("json", false, "one JSON object per record: topic, partition, offset, timestamp, key, value, headers")
	keySep := fs.String("k", "", "print the key, `SEP` and the value (the format produce -k reads back)")
	if _, err := fs.parse(args, 0, stdout); err != nil {
		return helped(err)
	}
	formats := 0
	for _, given := range []bool{*format != "", *asJSON, *keySep != ""} {
		if given {
			formats++
		}
	}
	switch {
	case *topic == "":
		return usagef("-t TOPIC is required")
	case formats > 1:
		return usagef("-k, -f and --json exclude each other")
	case *partition >= 0 && *group != "":
		return usagef("-p cannot be combined with -g (the group assigns partitions)")
	case *count < 0:
		return usagef("-n %d: want a count >= 0", *count)
	}
	spec, err := client.ParseOffsetSpec(*offset, time.Now())
	if err != nil {
		return usageError{err}
	}
	render := func(dst []byte, r *kgo.Record) ([]byte, error) {
		return append(append(dst, r.Value...), '\n'), nil
	}
	if *asJSON {
		render = client.AppendJSON
	} else if *keySep != "" {
		sep := []byte(*keySep)
		render = func(dst []byte, r *kgo.Record) ([]byte, error) {
			return append(append(append(append(dst, r.Key...), sep...), r.Value...), '\n'), nil
		}
	} else if *format != "" {
		f, err := client.ParseFormat(*format)
		if err != nil {
			return usageError{err}
		}
		render = func(dst []byte, r *kgo.Record) ([]byte, error) { return f.Append(dst, r), nil }
	}

	cl, adm, err := fs.connect(ctx)
	if err != nil {
		return err
	}
	defer cl.Close()
	if _, err := client.Topic(ctx, adm, *topic); err != nil {
		return err
	}
	var only []int32
	if *partition >= 0 {
		only = []int32{int32(*partition)}
	}
	resolved, err := spec.Resolve(ctx, adm, *topic, only...)
	if err != nil {
		return err
	}
	prog := &progress{end: map[int32]int64{}, pos: map[int32]int64{}, assigned: map[int32]bool{}}
	for p, o := range resolved {
		prog.end[p], prog.pos[p] = o.End, o.At
	}

	consumer := cl
	if *group == "" {
		offsets := map[int32]kgo.Offset{}
		for p, o := range resolved {
			offsets[p] = kgo.NewOffset().At(o.At)
			prog.assigned[p] = true
		}
		cl.AddConsumePartitions(map[string]map[int32]kgo.Offset{*topic: offsets})
	} else {
		gcl, err := joinGroup(ctx, fs, adm, *group, *topic, spec, resolved, prog)
		if err != nil {
			return err
		}
		defer gcl.Close()
		consumer = gcl
	}

	err = consumeLoop(ctx, consumer, prog, *group != "", *count, *exitAtEnd, render, stdout)
	if *group != "" {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if cerr := consumer.CommitMarkedOffsets(cctx); cerr != nil && err == nil {
			err = fmt.Errorf("commit offsets of group %q: %w", *group, cerr)
		}
	}
	return err
}

// joinGroup starts a consumer in group, which reads topic from the
// group's commits (spec where there are none) and commits only what is
// marked. prog learns where each partition starts and, from the
// assignment callbacks, which partitions this member reads.
func joinGroup(ctx context.Context, fs *toolFlags, adm *kadm.Client, group, topic string, spec client.OffsetSpec,
	resolved map[int32]client.PartitionOffsets, prog *progress) (*kgo.Client, error) {
	var committed kadm.OffsetResponses
	err := client.Retry(ctx, func() (err error) {
		committed, err = adm.FetchOffsets(ctx, group)
		if err == nil {
			err = committed.Error()
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("fetch offsets of group %q: %w", group, err)
	}
	for p, o := range resolved {
		if c, ok := committed.Lookup(topic, p); ok && c.At >= o.Start && c.At <= o.End {
			prog.pos[p] = c.At
		}
	}
	assign := func(on bool) func(context.Context, *kgo.Client, map[string][]int32) {
		return func(_ context.Context, _ *kgo.Client, m map[string][]int32) { prog.assign(m[topic], on) }
	}
	cl, _, err := fs.connect(ctx,
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(spec.Kgo()),
		kgo.AutoCommitMarks(),
		kgo.OnPartitionsAssigned(assign(true)),
		kgo.OnPartitionsRevoked(assign(false)),
		kgo.OnPartitionsLost(assign(false)),
	)
	return cl, err
}

// consumeLoop polls and prints until -n or -e is satisfied, ctx ends
// (not an error: ^C is how a follower stops) or a fetch fails.
func consumeLoop(ctx context.Context, cl *kgo.Client, prog *progress, inGroup bool, count int, exitAtEnd bool,
	render func([]byte, *kgo.Record) ([]byte, error), stdout io.Writer) error {
	out := bufio.NewWriterSize(stdout, 64<<10)
	var buf []byte
	printed := 0
	for {
		if (count > 0 && printed >= count) || (exitAtEnd && prog.atEnd()) {
			return out.Flush()
		}
		pctx, cancel := ctx, context.CancelFunc(func() {})
		if exitAtEnd {
			// Wake up to see whether a newly assigned partition is already
			// at its end (no record will ever come for it).
			pctx, cancel = context.WithTimeout(ctx, 250*time.Millisecond)
		}
		limit := 0 // all buffered records
		if count > 0 {
			limit = count - printed
		}
		fetches := cl.PollRecords(pctx, limit)
		cancel()
		if ctx.Err() != nil {
			return out.Flush()
		}
		for _, fe := range fetches.Errors() {
			if errors.Is(fe.Err, context.Canceled) || errors.Is(fe.Err, context.DeadlineExceeded) {
				continue
			}
			return fmt.Errorf("fetch %s/%d: %w", fe.Topic, fe.Partition, fe.Err)
		}
		var werr error
		fetches.EachRecord(func(r *kgo.Record) {
			if werr != nil || (count > 0 && printed >= count) {
				return
			}
			buf, werr = render(buf[:0], r)
			if werr == nil {
				_, werr = out.Write(buf)
			}
			prog.advance(r.Partition, r.Offset+1)
			if inGroup {
				cl.MarkCommitRecords(r)
			}
			printed++
		})
		if werr == nil {
			werr = out.Flush()
		}
		if werr != nil {
			return werr
		}
	}
}

// progress tracks, per partition, the next offset to print and the end
// offset -e stops at, and which partitions this consumer reads (a group
// member learns its partitions from the assignment callbacks, which kgo
// runs on its own goroutines).
type progress struct {
	mu       sync.Mutex
	end, pos map[int32]int64
	assigned map[int32]bool
}

func (p *progress) assign(ps []int32, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range ps {
		if on {
			p.assigned[n] = true
		} else {
			delete(p.assigned, n)
		}
	}
}

func (p *progress) advance(partition int32, next int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pos[partition] = max(p.pos[partition], next)
}

// atEnd: every partition read has reached its end (a topic without
// partitions read, or a member not yet assigned any, has not).
func (p *progress) atEnd() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.assigned) == 0 {
		return len(p.end) == 0
	}
	for n := range p.assigned {
		if p.pos[n] < p.end[n] {
			return false
		}
	}
	return true
}
