package client_test

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/varvelog/varve/client"
)

// The verification catches a lost and a duplicated id among ones seen
// exactly once, names them, and does not count other writers' records
// against the run.
func TestIDCheckFindsLossAndDuplicates(t *testing.T) {
	c := client.NewIDCounts(10)
	for id := range uint64(10) {
		switch id {
		case 4: // lost
		case 7: // read three times
			c.Add(id)
			c.Add(id)
			c.Add(id)
		default:
			c.Add(id)
		}
	}
	c.AddForeign()
	v := c.Check()
	if v.OK() || v.Expected != 10 || v.Seen != 9 || v.Lost != 1 || v.Duplicated != 1 || v.Unexpected != 0 || v.Foreign != 1 ||
		!slices.Equal(v.FirstLost, []uint64{4}) || !slices.Equal(v.FirstDuplicated, []uint64{7}) {
		t.Fatalf("check %+v", v)
	}
	if err := v.Err(); err == nil || err.Error() != "lost 1 of 10 records (id 4), duplicated 1 (id 7)" {
		t.Fatalf("Err: %v", err)
	}

	// Every id once, plus foreign records: fine.
	c = client.NewIDCounts(3)
	for id := range uint64(3) {
		c.Add(id)
	}
	c.AddForeign()
	if v := c.Check(); !v.OK() || v.Err() != nil || v.Seen != 3 || v.Foreign != 1 {
		t.Fatalf("clean run: %+v", v)
	}

	// Many losses list the first five; an id never sent fails the check.
	c = client.NewIDCounts(100)
	c.Add(99)
	c.Add(100)
	v = c.Check()
	if v.Lost != 99 || v.Unexpected != 1 || !slices.Equal(v.FirstLost, []uint64{0, 1, 2, 3, 4}) {
		t.Fatalf("check %+v", v)
	}
	if err := v.Err(); err == nil || err.Error() != "lost 99 of 100 records (ids 0, 1, 2, 3, 4, ...), 1 records with ids never sent" {
		t.Fatalf("Err: %v", err)
	}

	// A count saturates rather than wrapping back to "seen once".
	c = client.NewIDCounts(1)
	for range 256 {
		c.Add(0)
	}
	if v := c.Check(); v.Duplicated != 1 || v.Lost != 0 {
		t.Fatalf("256 sightings: %+v", v)
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h client.Histogram
	if h.Quantile(0.5) != 0 || h.Count() != 0 {
		t.Fatal("empty histogram")
	}
	// 1 ms .. 1000 ms, shuffled order does not matter.
	for i := 1000; i >= 1; i-- {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}, {0.999, 999 * time.Millisecond}, {1, time.Second}, {0.001, time.Millisecond}} {
		got := h.Quantile(tc.q)
		if rel := math.Abs(float64(got-tc.want)) / float64(tc.want); rel > 0.01 {
			t.Errorf("q%v = %v, want %v within 1%%", tc.q, got, tc.want)
		}
	}
	if h.Max() != time.Second || h.Count() != 1000 {
		t.Errorf("max %v count %d", h.Max(), h.Count())
	}

	// Merging two halves gives the same quantiles as one histogram.
	var a, b client.Histogram
	for i := 1; i <= 1000; i++ {
		if i%2 == 0 {
			a.Record(time.Duration(i) * time.Millisecond)
		} else {
			b.Record(time.Duration(i) * time.Millisecond)
		}
	}
	a.Merge(&b)
	for _, q := range []float64{0.5, 0.99, 0.999} {
		if a.Quantile(q) != h.Quantile(q) {
			t.Errorf("merged q%v = %v, want %v", q, a.Quantile(q), h.Quantile(q))
		}
	}

	// Sub-microsecond and single samples are clamped to the exact value.
	var one client.Histogram
	one.Record(300 * time.Nanosecond)
	if got := one.Quantile(0.99); got != 300*time.Nanosecond {
		t.Errorf("one sample: %v", got)
	}
}

func TestBenchValidate(t *testing.T) {
	good := client.Bench{Mode: client.BenchE2E, Topic: "t", Records: 1, RecordSize: client.BenchHeaderSize, Producers: 1, Consumers: 1, Acks: "all", Compression: "none"}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := client.Bench{Mode: "both", RecordSize: 8, Acks: "2", Compression: "brotli"}
	err := bad.Validate()
	for _, want := range []string{`bench mode "both"`, "no topic", "records 0", "record size 8: want at least 24", "producers 0", `acks "2"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate: %v, want it to mention %q", err, want)
		}
	}
}
