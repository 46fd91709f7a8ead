package client

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// IDCounts counts how often each record id 0..n-1 of one bench run was
// read back. It keeps one saturating byte per id, so ten million records
// cost 10 MB, and is not safe for concurrent use (the bench's consumers
// share one behind a mutex, taken once per poll).
type IDCounts struct {
	counts     []uint8
	unexpected int64 // ids >= n carrying this run's nonce
	foreign    int64 // records of another run or writer
}

// NewIDCounts makes the counter for ids 0..n-1.
func NewIDCounts(n int) *IDCounts { return &IDCounts{counts: make([]uint8, n)} }

// Add counts one sighting of id.
func (c *IDCounts) Add(id uint64) {
	if id >= uint64(len(c.counts)) {
		c.unexpected++
		return
	}
	if c.counts[id] < math.MaxUint8 {
		c.counts[id]++
	}
}

// AddForeign counts a record that is not this run's (another nonce, or a
// value too short to carry an id). Foreign records do not fail a check:
// someone else may write to the topic.
func (c *IDCounts) AddForeign() { c.foreign++ }

// IDCheck is the verdict on a run: every id exactly once, or what was
// lost and duplicated.
type IDCheck struct {
	Expected   int64 `json:"expected"`
	Seen       int64 `json:"seen"`       // distinct ids read
	Lost       int64 `json:"lost"`       // ids never read
	Duplicated int64 `json:"duplicated"` // ids read more than once
	Unexpected int64 `json:"unexpected"` // this run's nonce with an id it never sent
	Foreign    int64 `json:"foreign"`    // other writers' records, not counted against the run
	// The lowest lost and duplicated ids (at most maxListedIDs each), to
	// find them in the log.
	FirstLost       []uint64 `json:"first_lost,omitempty"`
	FirstDuplicated []uint64 `json:"first_duplicated,omitempty"`
}

const maxListedIDs = 5

// Check walks the counts.
func (c *IDCounts) Check() IDCheck {
	v := IDCheck{Expected: int64(len(c.counts)), Unexpected: c.unexpected, Foreign: c.foreign}
	for id, n := range c.counts {
		switch {
		case n == 0:
			v.Lost++
			if len(v.FirstLost) < maxListedIDs {
				v.FirstLost = append(v.FirstLost, uint64(id))
			}
		case n > 1:
			v.Duplicated++
			if len(v.FirstDuplicated) < maxListedIDs {
				v.FirstDuplicated = append(v.FirstDuplicated, uint64(id))
			}
		}
		if n > 0 {
			v.Seen++
		}
	}
	return v
}

// OK says every id was read exactly once and nothing unexpected was.
func (v IDCheck) OK() bool { return v.Lost == 0 && v.Duplicated == 0 && v.Unexpected == 0 }

// Err is nil when OK, else a one-line account such as
// "lost 2 of 1000 records (ids 7, 9), duplicated 1 (id 3)".
func (v IDCheck) Err() error {
	if v.OK() {
		return nil
	}
	var parts []string
	if v.Lost > 0 {
		parts = append(parts, fmt.Sprintf("lost %d of %d records (%s)", v.Lost, v.Expected, listIDs(v.FirstLost, v.Lost)))
	}
	if v.Duplicated > 0 {
		parts = append(parts, fmt.Sprintf("duplicated %d (%s)", v.Duplicated, listIDs(v.FirstDuplicated, v.Duplicated)))
	}
	if v.Unexpected > 0 {
		parts = append(parts, fmt.Sprintf("%d records with ids never sent", v.Unexpected))
	}
	return fmt.Errorf("%s", strings.Join(parts, ", "))
}

func listIDs(ids []uint64, total int64) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.FormatUint(id, 10)
	}
	word := "ids "
	if total == 1 {
		word = "id "
	}
	out := word + strings.Join(s, ", ")
	if total > int64(len(ids)) {
		out += ", ..."
	}
	return out
}

// Histogram records durations in buckets 1% wide (each bucket's upper
// bound is 1.01 times its lower bound, from 1 µs up), so any percentile
// it reports is within 1% of the exact one while memory stays constant
// however many records a bench sends. The minimum and maximum are exact.
// Not safe for concurrent use.
type Histogram struct {
	counts   []uint64 // bucket 0: below 1 µs; bucket i: [1µs*1.01^(i-1), 1µs*1.01^i)
	n        uint64
	min, max time.Duration
}

const histBase = float64(time.Microsecond)

var histLogGrowth = math.Log(1.01)

func histBucket(d time.Duration) int {
	if float64(d) < histBase {
		return 0
	}
	return 1 + int(math.Log(float64(d)/histBase)/histLogGrowth)
}

// Record adds one duration (negative ones count as 0).
func (h *Histogram) Record(d time.Duration) {
	d = max(d, 0)
	i := histBucket(d)
	if i >= len(h.counts) {
		h.counts = append(h.counts, make([]uint64, i+1-len(h.counts))...)
	}
	h.counts[i]++
	if h.n == 0 || d < h.min {
		h.min = d
	}
	if d > h.max {
		h.max = d
	}
	h.n++
}

// Merge adds o's samples.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.n == 0 {
		return
	}
	if len(o.counts) > len(h.counts) {
		h.counts = append(h.counts, make([]uint64, len(o.counts)-len(h.counts))...)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
}

// Count is the number of samples.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the largest sample, exactly.
func (h *Histogram) Max() time.Duration { return h.max }

// Quantile is the q-quantile (0 < q <= 1): the smallest sample with at
// least q of all samples at or below it, as the middle of its bucket
// (clamped to the exact minimum and maximum). 0 without samples.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum < rank {
			continue
		}
		var mid float64
		if i == 0 {
			mid = histBase / 2
		} else {
			lo := histBase * math.Exp(float64(i-1)*histLogGrowth)
			mid = lo * (1 + 1.01) / 2
		}
		return min(max(time.Duration(mid), h.min), h.max)
	}
	return h.max
}
