package partition

// epochEntry says that leader epoch epoch wrote its first offset at start.
type epochEntry struct {
	epoch int32
	start int64
}

// epochTable is the leader epoch -> start offset table behind
// OffsetForLeaderEpoch, ordered by epoch and start offset, both strictly
// increasing. It is durable (in every checkpoint, and rebuilt from batch
// headers past the checkpoint) because a wrong answer makes clients truncate
// or report data loss.
type epochTable []epochEntry

// latest returns the newest epoch, or -1 when the table is empty.
func (t epochTable) latest() int32 {
	if len(t) == 0 {
		return -1
	}
	return t[len(t)-1].epoch
}

// assign records that epoch starts at start. An epoch at or below the latest
// is ignored (epochs only grow). Entries that start at or after start are
// dropped first: they cover no offsets any more, as in Kafka's cache.
func (t epochTable) assign(epoch int32, start int64) epochTable {
	if epoch < 0 || epoch <= t.latest() {
		return t
	}
	for len(t) > 0 && t[len(t)-1].start >= start {
		t = t[:len(t)-1]
	}
	return append(t, epochEntry{epoch: epoch, start: start})
}

// truncateEnd drops the entries whose epoch starts at or after end, after the
// log was truncated to end.
func (t epochTable) truncateEnd(end int64) epochTable {
	for len(t) > 0 && t[len(t)-1].start >= end {
		t = t[:len(t)-1]
	}
	return t
}

// truncateStart drops the entries that end before logStart; the entry that
// covers logStart is kept, starting at logStart.
func (t epochTable) truncateStart(logStart int64) epochTable {
	i := 0
	for i+1 < len(t) && t[i+1].start <= logStart {
		i++
	}
	t = t[i:]
	if len(t) > 0 && t[0].start < logStart {
		t = append(epochTable{{epoch: t[0].epoch, start: logStart}}, t[1:]...)
	}
	return t
}

// endOffsetFor answers OffsetForLeaderEpoch the way Kafka does: for the
// latest epoch, the log end; for an older epoch, the largest epoch at or below
// it and the start offset of the first epoch above it; for an epoch older
// than all, the epoch asked for and the first start offset; for an unknown
// newer epoch or an empty table, (-1, -1).
func (t epochTable) endOffsetFor(requested int32, logEnd int64) (epoch int32, end int64) {
	if requested < 0 || len(t) == 0 {
		return -1, -1
	}
	if requested == t.latest() {
		return requested, logEnd
	}
	// First entry with an epoch above the one requested.
	hi := 0
	for hi < len(t) && t[hi].epoch <= requested {
		hi++
	}
	if hi == len(t) {
		return -1, -1
	}
	if hi == 0 {
		return requested, t[0].start
	}
	return t[hi-1].epoch, t[hi].start
}

func (t epochTable) clone() epochTable { return append(epochTable(nil), t...) }

// epochFor returns the epoch that wrote offset: the latest epoch whose start
// is at or below it, or -1 when offset precedes every entry.
func (t epochTable) epochFor(offset int64) int32 {
	for i := len(t) - 1; i >= 0; i-- {
		if t[i].start <= offset {
			return t[i].epoch
		}
	}
	return -1
}
