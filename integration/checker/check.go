package checker

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"
)

// tp is a topic partition.
type tp struct {
	topic string
	p     int32
}

func (k tp) String() string { return fmt.Sprintf("%s-%d", k.topic, k.p) }

// refLog is the final contents of one partition the checks measure
// consumers against: the first complete drain of it, or else its first
// replica.
type refLog struct {
	source   string
	start    int64
	data     []int64 // offsets of data records, ascending
	byOffset map[int64]Record
}

// dataIn returns the first data record at an offset in [from, to), if any.
func (r *refLog) dataIn(from, to int64) (Record, bool) {
	i := sort.Search(len(r.data), func(i int) bool { return r.data[i] >= from })
	if i < len(r.data) && r.data[i] < to {
		return r.byOffset[r.data[i]], true
	}
	return Record{}, false
}

// state is a snapshot of the history and what the checks derive from it.
type state struct {
	writes     []Write
	polls      []Poll
	commits    []Commit
	rebalances []Rebalance
	consumers  map[string]consumerInfo
	start      time.Time
	drains     []*Drain
	replicas   []*ReplicaLog
	liveness   []Liveness

	byValue  map[string]*Write
	refs     map[tp]*refLog
	controls map[tp]map[int64]bool // offsets of control records in any replica or drain
	sessions []session             // filled by (e), used by (g)
}

// session is one consumer's ownership of one partition: from an Assigned
// callback (or a direct consumer's first poll) to Revoked or Lost.
type session struct {
	consumer, group string
	tp              tp
	first           *Poll // its first poll, nil if none
}

// Check runs every check on the history as recorded so far.
func (h *History) Check() *Report {
	h.mu.Lock()
	s := &state{
		writes:     slices.Clone(h.writes),
		polls:      slices.Clone(h.polls),
		commits:    slices.Clone(h.commits),
		rebalances: slices.Clone(h.rebalances),
		consumers:  maps.Clone(h.consumers),
		start:      h.start,
		drains:     slices.Clone(h.drains),
		replicas:   slices.Clone(h.replicas),
		liveness:   slices.Clone(h.liveness),
	}
	notes := slices.Clone(h.notes)
	h.mu.Unlock()
	s.derive()
	r := &Report{Notes: notes, Summary: s.summary()}
	r.Checks = append(r.Checks,
		s.checkAcked(), s.checkDense(), s.checkOneValue(), s.checkNoDuplicates(),
		s.checkConsumerOrder(), s.checkAckOrder(), s.checkCommits(), s.checkLiveness(), s.checkReplicas())
	return r
}

func (s *state) derive() {
	s.byValue = map[string]*Write{}
	for i := range s.writes {
		w := &s.writes[i]
		if w.Outcome == Pending {
			w.Outcome = Indeterminate
			w.Err = "never completed"
		}
		s.byValue[w.Value] = w
	}
	s.refs = map[tp]*refLog{}
	s.controls = map[tp]map[int64]bool{}
	addControl := func(k tp, off int64) {
		if s.controls[k] == nil {
			s.controls[k] = map[int64]bool{}
		}
		s.controls[k][off] = true
	}
	for _, d := range s.drains {
		for _, p := range sortedPartitions(d.Partitions) {
			dp := d.Partitions[p]
			k := tp{d.Topic, p}
			for _, rec := range dp.Records {
				if rec.Control {
					addControl(k, rec.Offset)
				}
			}
			if dp.Err == "" && s.refs[k] == nil {
				s.refs[k] = newRef(d.Source, dp.Start, dp.Records)
			}
		}
	}
	for _, rl := range s.replicas {
		k := tp{rl.Topic, rl.Partition}
		for _, rec := range rl.Records {
			if rec.Control {
				addControl(k, rec.Offset)
			}
		}
		if s.refs[k] == nil {
			s.refs[k] = newRef("replica "+rl.Name, rl.Start, rl.Records)
		}
	}
}

func newRef(source string, start int64, recs []Record) *refLog {
	r := &refLog{source: source, start: start, byOffset: map[int64]Record{}}
	for _, rec := range recs {
		if !rec.Control {
			r.data = append(r.data, rec.Offset)
			r.byOffset[rec.Offset] = rec
		}
	}
	slices.Sort(r.data)
	return r
}

func (s *state) summary() []string {
	var ok, failed, indet, idem int
	for _, w := range s.writes {
		switch w.Outcome {
		case OK:
			ok++
		case Failed:
			failed++
		default:
			indet++
		}
		if w.Idempotent {
			idem++
		}
	}
	var commitsOK int
	for _, c := range s.commits {
		if c.Outcome == OK {
			commitsOK++
		}
	}
	out := []string{
		fmt.Sprintf("writes: %d (%d from idempotent producers): %d ok, %d failed, %d indeterminate", len(s.writes), idem, ok, failed, indet),
		fmt.Sprintf("consumers: %d, polled records: %d, commits: %d (%d ok), rebalance callbacks: %d",
			len(s.consumers), len(s.polls), len(s.commits), commitsOK, len(s.rebalances)),
	}
	type activity struct {
		polls, commits, ok, rebalances int
		first, last                    time.Time
	}
	acts := map[string]*activity{}
	act := func(name string) *activity {
		if acts[name] == nil {
			acts[name] = &activity{}
		}
		return acts[name]
	}
	for _, p := range s.polls {
		a := act(p.Consumer)
		a.polls++
		if a.first.IsZero() {
			a.first = p.At
		}
		a.last = p.At
	}
	for _, c := range s.commits {
		a := act(c.Consumer)
		a.commits++
		if c.Outcome == OK {
			a.ok++
		}
	}
	for _, r := range s.rebalances {
		act(r.Consumer).rebalances++
	}
	names := make([]string, 0, len(s.consumers))
	for n := range s.consumers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		a := act(n)
		line := fmt.Sprintf("consumer %s (group %q): %d records polled", n, s.consumers[n].group, a.polls)
		if a.polls > 0 {
			line += fmt.Sprintf(" from +%.1fs to +%.1fs", a.first.Sub(s.start).Seconds(), a.last.Sub(s.start).Seconds())
		}
		out = append(out, line+fmt.Sprintf(", %d commits (%d ok), %d rebalance callbacks", a.commits, a.ok, a.rebalances))
	}
	for _, d := range s.drains {
		n := 0
		for _, dp := range d.Partitions {
			n += len(dp.Records)
		}
		out = append(out, fmt.Sprintf("%s: %s, %d partitions, %d records in %v", d.Source, d.Topic, len(d.Partitions), n, d.Took.Round(1e6)))
	}
	for _, rl := range s.replicas {
		out = append(out, fmt.Sprintf("replica %s of %s-%d: offsets [%d, %d), %d batches, %d records", rl.Name, rl.Topic, rl.Partition, rl.Start, rl.End, len(rl.Batches), len(rl.Records)))
	}
	return out
}

// where finds value in a drain or replica's records, for evidence.
func where(value string, recs []Record) string {
	for _, r := range recs {
		if r.Value == value && !r.Control {
			return fmt.Sprintf("found at offset %d", r.Offset)
		}
	}
	return "found nowhere in it"
}

func describe(w *Write) string {
	s := fmt.Sprintf("write %s (producer %s seq %d, key %q, idempotent %v): %v", w.Value, w.Producer, w.Seq, w.Key, w.Idempotent, w.Outcome)
	if w.Outcome == OK {
		s += fmt.Sprintf(" at %s-%d@%d", w.Topic, w.AckPartition, w.AckOffset)
	}
	if w.Err != "" {
		s += " (" + w.Err + ")"
	}
	return s + fmt.Sprintf(", invoked at clock %d, completed at %d", w.Invoked, w.Completed)
}

// (a) every acknowledged write is in every drain, at its acknowledged
// partition and offset.
func (s *state) checkAcked() *CheckResult {
	c := &CheckResult{ID: "a", Name: "no acknowledged write lost"}
	index := map[*DrainedPartition]map[int64]Record{}
	lookup := func(dp *DrainedPartition) map[int64]Record {
		if m, ok := index[dp]; ok {
			return m
		}
		m := map[int64]Record{}
		for _, r := range dp.Records {
			m[r.Offset] = r
		}
		index[dp] = m
		return m
	}
	undrained := map[string]bool{}
	for i := range s.writes {
		w := &s.writes[i]
		if w.Outcome != OK {
			continue
		}
		drained := false
		for _, d := range s.drains {
			if d.Topic != w.Topic {
				continue
			}
			drained = true
			c.Examined++
			dp := d.Partitions[w.AckPartition]
			if dp == nil {
				c.Violations = append(c.Violations, Violation{
					What:     fmt.Sprintf("%s acknowledged in partition %d, which %s did not read", w.Value, w.AckPartition, d.Source),
					Evidence: []string{describe(w)}})
				continue
			}
			got, ok := lookup(dp)[w.AckOffset]
			switch {
			case ok && got.Value == w.Value:
				continue
			case ok:
				c.Violations = append(c.Violations, Violation{
					What: fmt.Sprintf("%s acknowledged at %s-%d@%d, but %s holds %q there", w.Value, w.Topic, w.AckPartition, w.AckOffset, d.Source, got.Value),
					Evidence: []string{describe(w), fmt.Sprintf("%s read [%d, %d) of partition %d; %s %s", d.Source, dp.Start, dp.End, w.AckPartition,
						w.Value, where(w.Value, dp.Records))}})
			case dp.Err != "":
				c.Violations = append(c.Violations, Violation{
					What:     fmt.Sprintf("%s acknowledged at %s-%d@%d was not read: %s", w.Value, w.Topic, w.AckPartition, w.AckOffset, dp.Err),
					Evidence: []string{describe(w)}})
			default:
				c.Violations = append(c.Violations, Violation{
					What: fmt.Sprintf("%s acknowledged at %s-%d@%d is lost: %s has no record there", w.Value, w.Topic, w.AckPartition, w.AckOffset, d.Source),
					Evidence: []string{describe(w), fmt.Sprintf("%s read [%d, %d) of partition %d (%d records); %s %s", d.Source, dp.Start, dp.End,
						w.AckPartition, len(dp.Records), w.Value, where(w.Value, dp.Records))}})
			}
		}
		if !drained && !undrained[w.Topic] {
			undrained[w.Topic] = true
			c.Violations = append(c.Violations, Violation{What: fmt.Sprintf("topic %s was never drained: its acknowledged writes cannot be checked", w.Topic)})
		}
	}
	return c
}

// (b) offsets are dense and strictly increasing in every drain and every
// replica, gaps allowed only at control records.
func (s *state) checkDense() *CheckResult {
	c := &CheckResult{ID: "b", Name: "offsets dense and strictly increasing"}
	walk := func(source string, k tp, start, end int64, recs []Record) {
		next := start
		for _, r := range recs {
			c.Examined++
			switch {
			case r.Offset < next:
				c.Violations = append(c.Violations, Violation{
					What: fmt.Sprintf("%s, %s: offset %d (%q) follows offset %d: not increasing", source, k, r.Offset, r.Value, next-1)})
			case r.Offset > next:
				if gap := s.dataGap(k, next, r.Offset); gap >= 0 {
					c.Violations = append(c.Violations, Violation{
						What: fmt.Sprintf("%s, %s: offsets [%d, %d) missing before %d (%q); %d is not a control record", source, k, next, r.Offset, r.Offset, r.Value, gap)})
				}
			}
			next = max(next, r.Offset+1)
		}
		if end >= 0 && next < end {
			c.Violations = append(c.Violations, Violation{
				What: fmt.Sprintf("%s, %s: records end at %d, below the end offset %d", source, k, next, end)})
		}
	}
	for _, d := range s.drains {
		for _, p := range sortedPartitions(d.Partitions) {
			dp := d.Partitions[p]
			if dp.Err != "" {
				continue // (h) reports the unfinished read
			}
			walk(d.Source, tp{d.Topic, p}, dp.Start, dp.End, dp.Records)
		}
	}
	for _, rl := range s.replicas {
		walk("replica "+rl.Name, tp{rl.Topic, rl.Partition}, rl.Start, -1, rl.Records)
	}
	return c
}

// dataGap returns the first offset in [from, to) that no control record
// explains, or -1.
func (s *state) dataGap(k tp, from, to int64) int64 {
	for o := from; o < to; o++ {
		if !s.controls[k][o] {
			return o
		}
	}
	return -1
}

// obs is one observation of a (partition, offset).
type obs struct {
	value, key string
	control    bool
	source     string
}

// (c) one value per (partition, offset) across acknowledgements, polls,
// drains and replicas; every value observed was written, with its key, to
// its topic.
func (s *state) checkOneValue() *CheckResult {
	c := &CheckResult{ID: "c", Name: "one value per offset everywhere; the acknowledged offset holds the value"}
	type pos struct {
		k   tp
		off int64
	}
	seen := map[pos]obs{}
	phantom := map[string]bool{}
	see := func(k tp, off int64, o obs) {
		c.Examined++
		p := pos{k, off}
		if first, ok := seen[p]; !ok {
			seen[p] = o
		} else if first.value != o.value || first.control != o.control {
			c.Violations = append(c.Violations, Violation{
				What:     fmt.Sprintf("%s@%d holds two values: %s and %s", k, off, show(first), show(o)),
				Evidence: s.evidence(first.value, o.value)})
		}
		if o.control {
			return
		}
		w := s.byValue[o.value]
		switch {
		case w == nil:
			if !phantom[o.value] {
				phantom[o.value] = true
				c.Violations = append(c.Violations, Violation{What: fmt.Sprintf("%s@%d holds %q, which no producer wrote (%s)", k, off, o.value, o.source)})
			}
		case w.Topic != k.topic:
			c.Violations = append(c.Violations, Violation{What: fmt.Sprintf("%s@%d holds %q, written to topic %s (%s)", k, off, o.value, w.Topic, o.source)})
		case w.Key != o.key:
			c.Violations = append(c.Violations, Violation{What: fmt.Sprintf("%s@%d holds %q with key %q, written with key %q (%s)", k, off, o.value, o.key, w.Key, o.source)})
		}
	}
	for i := range s.writes {
		w := &s.writes[i]
		if w.Outcome == OK {
			see(tp{w.Topic, w.AckPartition}, w.AckOffset, obs{value: w.Value, key: w.Key, source: fmt.Sprintf("acknowledgement to %s at clock %d", w.Producer, w.Completed)})
		}
	}
	for _, d := range s.drains {
		for _, p := range sortedPartitions(d.Partitions) {
			for _, r := range d.Partitions[p].Records {
				see(tp{d.Topic, p}, r.Offset, obs{value: r.Value, key: r.Key, control: r.Control, source: d.Source})
			}
		}
	}
	for _, rl := range s.replicas {
		for _, r := range rl.Records {
			see(tp{rl.Topic, rl.Partition}, r.Offset, obs{value: r.Value, key: r.Key, control: r.Control, source: "replica " + rl.Name})
		}
	}
	for _, pl := range s.polls {
		see(tp{pl.Topic, pl.Partition}, pl.Offset, obs{value: pl.Value, key: pl.Key, source: fmt.Sprintf("poll by %s at clock %d", pl.Consumer, pl.Event)})
	}
	return c
}

func show(o obs) string {
	if o.control {
		return fmt.Sprintf("a control record (%s)", o.source)
	}
	return fmt.Sprintf("%q (%s)", o.value, o.source)
}

func (s *state) evidence(values ...string) []string {
	var out []string
	for _, v := range values {
		if w := s.byValue[v]; w != nil {
			out = append(out, describe(w))
		}
	}
	return out
}

// (d) no value twice in a drain or a replica when an idempotent producer
// wrote it; no value in two partitions whoever wrote it (a record's
// partition is chosen once).
func (s *state) checkNoDuplicates() *CheckResult {
	c := &CheckResult{ID: "d", Name: "no duplicates from idempotent producers"}
	type at struct {
		p   int32
		off int64
	}
	plain := 0
	scan := func(source, topic string, parts map[int32][]Record) {
		first := map[string]at{}
		for _, p := range sortedPartitions(parts) {
			for _, r := range parts[p] {
				if r.Control {
					continue
				}
				w := s.byValue[r.Value]
				if w != nil && w.Idempotent {
					c.Examined++
				}
				prev, dup := first[r.Value]
				if !dup {
					first[r.Value] = at{p, r.Offset}
					continue
				}
				if w != nil && !w.Idempotent && prev.p == p {
					plain++
					continue
				}
				c.Violations = append(c.Violations, Violation{
					What:     fmt.Sprintf("%s: %q twice in %s: at %d@%d and %d@%d", source, r.Value, topic, prev.p, prev.off, p, r.Offset),
					Evidence: s.evidence(r.Value)})
			}
		}
	}
	for _, d := range s.drains {
		parts := map[int32][]Record{}
		for p, dp := range d.Partitions {
			parts[p] = dp.Records
		}
		scan(d.Source, d.Topic, parts)
	}
	byTopic := map[string]map[string]map[int32][]Record{} // replica name -> topic -> partition
	for _, rl := range s.replicas {
		if byTopic[rl.Name] == nil {
			byTopic[rl.Name] = map[string]map[int32][]Record{}
		}
		if byTopic[rl.Name][rl.Topic] == nil {
			byTopic[rl.Name][rl.Topic] = map[int32][]Record{}
		}
		byTopic[rl.Name][rl.Topic][rl.Partition] = rl.Records
	}
	names := make([]string, 0, len(byTopic))
	for n := range byTopic {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		topics := make([]string, 0, len(byTopic[n]))
		for t := range byTopic[n] {
			topics = append(topics, t)
		}
		sort.Strings(topics)
		for _, t := range topics {
			scan("replica "+n, t, byTopic[n][t])
		}
	}
	if plain > 0 {
		c.Name += fmt.Sprintf(" (%d duplicates from non-idempotent producers, allowed)", plain)
	}
	return c
}

// (e) within one ownership of a partition, a consumer's offsets strictly
// increase and skip no data record; a direct consumer starts at the log
// start (a group member's start is (g)'s).
func (s *state) checkConsumerOrder() *CheckResult {
	c := &CheckResult{ID: "e", Name: "consumer offsets never go back or skip between rebalances"}
	type event struct {
		clock int64
		poll  *Poll
		rb    *Rebalance
	}
	byConsumer := map[string][]event{}
	for i := range s.polls {
		p := &s.polls[i]
		byConsumer[p.Consumer] = append(byConsumer[p.Consumer], event{clock: p.Event, poll: p})
	}
	for i := range s.rebalances {
		r := &s.rebalances[i]
		byConsumer[r.Consumer] = append(byConsumer[r.Consumer], event{clock: r.Event, rb: r})
	}
	names := make([]string, 0, len(byConsumer))
	for n := range byConsumer {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		evs := byConsumer[name]
		sort.Slice(evs, func(i, j int) bool { return evs[i].clock < evs[j].clock })
		group := s.consumers[name].group
		open := map[tp]*session{}
		last := map[tp]int64{}
		for _, ev := range evs {
			if r := ev.rb; r != nil {
				for _, p := range r.Partitions {
					k := tp{r.Topic, p}
					if ss := open[k]; ss != nil {
						s.closeSession(ss)
					}
					delete(open, k)
					delete(last, k)
					if r.Kind == Assigned {
						open[k] = &session{consumer: name, group: group, tp: k}
					}
				}
				continue
			}
			pl := ev.poll
			k := tp{pl.Topic, pl.Partition}
			c.Examined++
			ss := open[k]
			if ss == nil {
				if group != "" {
					c.Violations = append(c.Violations, Violation{
						What: fmt.Sprintf("%s polled %s@%d (%q) at clock %d while it owned no such partition", name, k, pl.Offset, pl.Value, pl.Event)})
					continue
				}
				ss = &session{consumer: name, tp: k}
				open[k] = ss
			}
			prev, polled := last[k]
			last[k] = pl.Offset
			if !polled {
				ss.first = pl
				if group == "" {
					if ref := s.refs[k]; ref != nil {
						if skipped, ok := ref.dataIn(ref.start, pl.Offset); ok {
							c.Violations = append(c.Violations, Violation{
								What: fmt.Sprintf("%s started %s at %d, above data at %d (%q) from the log start %d", name, k, pl.Offset, skipped.Offset, skipped.Value, ref.start)})
						}
					}
				}
				continue
			}
			if pl.Offset <= prev {
				c.Violations = append(c.Violations, Violation{
					What: fmt.Sprintf("%s went back on %s: offset %d (%q) at clock %d after %d", name, k, pl.Offset, pl.Value, pl.Event, prev)})
				continue
			}
			if ref := s.refs[k]; ref != nil {
				if skipped, ok := ref.dataIn(prev+1, pl.Offset); ok {
					c.Violations = append(c.Violations, Violation{
						What: fmt.Sprintf("%s skipped on %s: offset %d (%q) at clock %d after %d, over data at %d (%q) in %s",
							name, k, pl.Offset, pl.Value, pl.Event, prev, skipped.Offset, skipped.Value, ref.source)})
				}
			}
		}
		for _, ss := range open {
			s.closeSession(ss)
		}
	}
	return c
}

// closeSession keeps a finished session for (g).
func (s *state) closeSession(ss *session) {
	if ss.group != "" && ss.first != nil {
		s.sessions = append(s.sessions, *ss)
	}
}

// (f) one producer's acknowledgements on one partition have offsets that
// increase with the order it sent them in.
func (s *state) checkAckOrder() *CheckResult {
	c := &CheckResult{ID: "f", Name: "a producer's acks on a partition have increasing offsets"}
	type key struct {
		producer string
		k        tp
	}
	last := map[key]*Write{}
	for i := range s.writes { // invocation order is each producer's send order
		w := &s.writes[i]
		if w.Outcome != OK {
			continue
		}
		c.Examined++
		k := key{w.Producer, tp{w.Topic, w.AckPartition}}
		if prev := last[k]; prev != nil && w.AckOffset <= prev.AckOffset {
			c.Violations = append(c.Violations, Violation{
				What:     fmt.Sprintf("%s: %s (seq %d) acknowledged at %s@%d, not after %s (seq %d) at %d", w.Producer, w.Value, w.Seq, k.k, w.AckOffset, prev.Value, prev.Seq, prev.AckOffset),
				Evidence: []string{describe(prev), describe(w)}})
		}
		if prev := last[k]; prev == nil || w.AckOffset > prev.AckOffset {
			last[k] = w
		}
	}
	return c
}

// (g) a group's successful commits on a partition never go below one that
// completed before they were sent; a member that takes a partition over
// starts at or below the highest offset committed (or attempted) before
// its first poll, skipping no data.
func (s *state) checkCommits() *CheckResult {
	c := &CheckResult{ID: "g", Name: "committed offsets never regress; consumption resumes at or below the commit"}
	type gk struct {
		group string
		k     tp
	}
	byKey := map[gk][]*Commit{}
	for i := range s.commits {
		cm := &s.commits[i]
		k := gk{cm.Group, tp{cm.Topic, cm.Partition}}
		byKey[k] = append(byKey[k], cm)
	}
	type step struct {
		clock    int64
		complete bool
		cm       *Commit
	}
	for k, cms := range byKey {
		var steps []step
		for _, cm := range cms {
			steps = append(steps, step{cm.Invoked, false, cm})
			if cm.Outcome == OK {
				steps = append(steps, step{cm.Completed, true, cm})
			}
		}
		sort.Slice(steps, func(i, j int) bool { return steps[i].clock < steps[j].clock })
		var best *Commit // the highest successful commit completed so far
		floor := map[*Commit]*Commit{}
		for _, st := range steps {
			if !st.complete {
				floor[st.cm] = best
				continue
			}
			c.Examined++
			if f := floor[st.cm]; f != nil && st.cm.Offset < f.Offset {
				c.Violations = append(c.Violations, Violation{
					What: fmt.Sprintf("group %s %s: %s committed %d (clock %d-%d), below %d committed by %s (completed at clock %d)",
						k.group, k.k, st.cm.Consumer, st.cm.Offset, st.cm.Invoked, st.cm.Completed, f.Offset, f.Consumer, f.Completed)})
			}
			if best == nil || st.cm.Offset > best.Offset {
				best = st.cm
			}
		}
	}
	for _, ss := range s.sessions {
		if ss.group == "" || ss.first == nil {
			continue
		}
		c.Examined++
		ref := s.refs[ss.tp]
		if ref == nil {
			continue
		}
		bound, by := ref.start, "the log start (no commit before)"
		for _, cm := range byKey[gk{ss.group, ss.tp}] {
			if cm.Invoked < ss.first.Event && cm.Offset > bound {
				bound, by = cm.Offset, fmt.Sprintf("the commit by %s at clock %d (%v)", cm.Consumer, cm.Invoked, cm.Outcome)
			}
		}
		if skipped, ok := ref.dataIn(bound, ss.first.Offset); ok {
			c.Violations = append(c.Violations, Violation{
				What: fmt.Sprintf("group %s: %s resumed %s at %d (clock %d), above %d from %s: skipped data at %d (%q)",
					ss.group, ss.consumer, ss.tp, ss.first.Offset, ss.first.Event, bound, by, skipped.Offset, skipped.Value)})
		}
	}
	sort.Slice(c.Violations, func(i, j int) bool { return c.Violations[i].What < c.Violations[j].What })
	return c
}

// (h) every bounded wait after the final heal finished in time.
func (s *state) checkLiveness() *CheckResult {
	c := &CheckResult{ID: "h", Name: "after the heal every value is readable and every group's lag reaches 0 in time"}
	for _, l := range s.liveness {
		c.Examined++
		if !l.OK {
			c.Violations = append(c.Violations, Violation{
				What: fmt.Sprintf("%s: not done within %v (waited %v): %s", l.What, l.Bound, l.Took.Round(1e6), l.Detail)})
		}
	}
	return c
}

// (r) row 8: every replica's files are a clean chain of valid batches, the
// replicas of a partition hold byte-identical batches and end at the same
// offset, and none ends below a drain's high watermark.
func (s *state) checkReplicas() *CheckResult {
	c := &CheckResult{ID: "r", Name: "replicas agree: identical batches, valid CRCs, same end (row 8)"}
	byTP := map[tp][]*ReplicaLog{}
	var keys []tp
	for _, rl := range s.replicas {
		k := tp{rl.Topic, rl.Partition}
		if byTP[k] == nil {
			keys = append(keys, k)
		}
		byTP[k] = append(byTP[k], rl)
		for _, p := range rl.Problems {
			c.Violations = append(c.Violations, Violation{What: fmt.Sprintf("replica %s of %s: %s", rl.Name, k, p)})
		}
	}
	for _, k := range keys {
		rls := byTP[k]
		ref := rls[0]
		for _, d := range s.drains {
			if dp := d.Partitions[k.p]; d.Topic == k.topic && dp != nil && dp.Err == "" {
				for _, rl := range rls {
					if rl.End < dp.End {
						c.Violations = append(c.Violations, Violation{
							What: fmt.Sprintf("replica %s of %s ends at %d, below the high watermark %d %s read", rl.Name, k, rl.End, dp.End, d.Source)})
					}
				}
			}
		}
		refAt := map[int64]*Batch{}
		for i := range ref.Batches {
			refAt[ref.Batches[i].BaseOffset] = &ref.Batches[i]
		}
		for _, rl := range rls[1:] {
			if rl.End != ref.End {
				c.Violations = append(c.Violations, Violation{
					What: fmt.Sprintf("%s: replica %s ends at %d, replica %s at %d", k, rl.Name, rl.End, ref.Name, ref.End)})
			}
			from, to := max(ref.Start, rl.Start), min(ref.End, rl.End)
			for i := range rl.Batches {
				b := &rl.Batches[i]
				if b.BaseOffset < from || b.LastOffset >= to {
					continue
				}
				c.Examined++
				rb := refAt[b.BaseOffset]
				switch {
				case rb == nil:
					c.Violations = append(c.Violations, Violation{
						What: fmt.Sprintf("%s: replica %s has a batch at [%d, %d] (%s) where replica %s has no batch starting", k, rl.Name, b.BaseOffset, b.LastOffset, b.Segment, ref.Name)})
				case !bytes.Equal(rb.Raw, b.Raw):
					c.Violations = append(c.Violations, Violation{
						What: fmt.Sprintf("%s: the batch at offset %d differs: replica %s %d bytes ending at %d (%s), replica %s %d bytes ending at %d (%s)",
							k, b.BaseOffset, rl.Name, len(b.Raw), b.LastOffset, b.Segment, ref.Name, len(rb.Raw), rb.LastOffset, rb.Segment)})
				}
			}
		}
	}
	return c
}
