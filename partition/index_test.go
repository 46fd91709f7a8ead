package partition

import (
	"fmt"
	"testing"
)

func TestSegmentFileNames(t *testing.T) {
	if got := segmentFileName(4711, logExt); got != "00000000000000004711.log" {
		t.Fatalf("name %q", got)
	}
	cases := []struct {
		name string
		base int64
		ext  string
		ok   bool
	}{
		{"00000000000000000000.log", 0, logExt, true},
		{"00000000000000004711.index", 4711, indexExt, true},
		{"09223372036854775807.timeindex", 9223372036854775807, timeIndexExt, true},
		{"99999999999999999999.log", 0, "", false}, // overflows int64
		{"0000000000000000471.log", 0, "", false},  // 19 digits
		{"000000000000000047111.log", 0, "", false},
		{"0000000000000000471a.log", 0, "", false},
		{"00000000000000004711.snapshot", 0, "", false},
		{"checkpoint", 0, "", false},
		{"00000000000000004711.log.tmp", 0, "", false},
	}
	for _, c := range cases {
		base, ext, ok := parseSegmentFileName(c.name)
		if ok != c.ok || (ok && (base != c.base || ext != c.ext)) {
			t.Errorf("%s: got (%d, %q, %v), want (%d, %q, %v)", c.name, base, ext, ok, c.base, c.ext, c.ok)
		}
	}
}

func TestFloorIndex(t *testing.T) {
	idx := []indexEntry{{rel: 10, pos: 4100}, {rel: 25, pos: 8300}, {rel: 40, pos: 12500}}
	cases := []struct {
		rel  uint32
		want int64
	}{{0, 0}, {9, 0}, {10, 4100}, {24, 4100}, {25, 8300}, {39, 8300}, {40, 12500}, {1 << 30, 12500}}
	for _, c := range cases {
		if got := floorIndex(idx, c.rel); got != c.want {
			t.Errorf("floorIndex(%d) = %d, want %d", c.rel, got, c.want)
		}
	}
	if got := floorIndex(nil, 5); got != 0 {
		t.Errorf("empty index gave %d", got)
	}
}

func TestLastBelowTime(t *testing.T) {
	times := []timeEntry{{ts: 100, rel: 3}, {ts: 200, rel: 9}, {ts: 300, rel: 20}}
	cases := []struct {
		ts      int64
		wantRel uint32
		wantOK  bool
	}{{50, 0, false}, {100, 0, false}, {101, 3, true}, {200, 3, true}, {250, 9, true}, {301, 20, true}}
	for _, c := range cases {
		rel, ok := lastBelowTime(times, c.ts)
		if rel != c.wantRel || ok != c.wantOK {
			t.Errorf("lastBelowTime(%d) = (%d, %v), want (%d, %v)", c.ts, rel, ok, c.wantRel, c.wantOK)
		}
	}
}

func TestDecodeIndexKeepsConsistentPrefix(t *testing.T) {
	es := []indexEntry{{rel: 2, pos: 100}, {rel: 5, pos: 300}, {rel: 9, pos: 700}}
	enc := appendIndexEntries(nil, es)
	cases := []struct {
		name      string
		b         []byte
		size      int64
		next      uint64
		wantCount int
		wantOK    bool
	}{
		{"whole", enc, 1000, 20, 3, true},
		{"torn tail", enc[:len(enc)-3], 1000, 20, 2, false},
		{"position past the segment", enc, 700, 20, 2, false},
		{"offset past the segment", enc, 1000, 9, 2, false},
		{"out of order", append(append([]byte(nil), enc...), appendIndexEntries(nil, []indexEntry{{rel: 8, pos: 800}})...), 1000, 20, 3, false},
		{"empty", nil, 1000, 20, 0, true},
	}
	for _, c := range cases {
		got, ok := decodeIndex(c.b, c.size, c.next)
		if len(got) != c.wantCount || ok != c.wantOK {
			t.Errorf("%s: %d entries ok=%v, want %d ok=%v", c.name, len(got), ok, c.wantCount, c.wantOK)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(es[:min(c.wantCount, 3)]) {
			t.Errorf("%s: entries %v", c.name, got)
		}
	}
	times := []timeEntry{{ts: 5, rel: 1}, {ts: 9, rel: 4}}
	tenc := appendTimeEntries(nil, times)
	if got, ok := decodeTimeIndex(tenc, 10); !ok || fmt.Sprint(got) != fmt.Sprint(times) {
		t.Errorf("time index round trip: %v %v", got, ok)
	}
	bad := appendTimeEntries(nil, []timeEntry{{ts: 9, rel: 1}, {ts: 5, rel: 4}})
	if got, ok := decodeTimeIndex(bad, 10); ok || len(got) != 1 {
		t.Errorf("decreasing timestamps accepted: %v %v", got, ok)
	}
}
