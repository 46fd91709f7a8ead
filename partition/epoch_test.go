package partition

import (
	"fmt"
	"testing"
)

func TestEpochTable(t *testing.T) {
	var tab epochTable
	tab = tab.assign(1, 0)
	tab = tab.assign(1, 5)  // same epoch: ignored
	tab = tab.assign(0, 9)  // older epoch: ignored
	tab = tab.assign(3, 10) // epoch 2 never wrote
	tab = tab.assign(4, 25)
	if fmt.Sprint(tab) != "[{1 0} {3 10} {4 25}]" {
		t.Fatalf("table %v", tab)
	}
	const logEnd = 40
	cases := []struct {
		req       int32
		wantEpoch int32
		wantEnd   int64
	}{
		{-1, -1, -1},
		{0, 0, 0},   // older than every entry: the first start
		{1, 1, 10},  // ends where epoch 3 starts
		{2, 1, 10},  // no entry for 2: the largest below is 1
		{3, 3, 25},  // ends where 4 starts
		{4, 4, 40},  // latest: the log end
		{5, -1, -1}, // newer than any known
	}
	for _, c := range cases {
		e, end := tab.endOffsetFor(c.req, logEnd)
		if e != c.wantEpoch || end != c.wantEnd {
			t.Errorf("endOffsetFor(%d) = (%d, %d), want (%d, %d)", c.req, e, end, c.wantEpoch, c.wantEnd)
		}
	}
	if e, end := epochTable(nil).endOffsetFor(3, 7); e != -1 || end != -1 {
		t.Errorf("empty table answered (%d, %d)", e, end)
	}
	// A new epoch at a start offset that an older entry also had replaces it.
	if got := tab.clone().assign(6, 25); fmt.Sprint(got) != "[{1 0} {3 10} {6 25}]" {
		t.Errorf("assign over an empty epoch: %v", got)
	}
	if got := tab.clone().truncateEnd(10); fmt.Sprint(got) != "[{1 0}]" {
		t.Errorf("truncateEnd(10): %v", got)
	}
	if got := tab.clone().truncateEnd(11); fmt.Sprint(got) != "[{1 0} {3 10}]" {
		t.Errorf("truncateEnd(11): %v", got)
	}
	if got := tab.clone().truncateStart(12); fmt.Sprint(got) != "[{3 12} {4 25}]" {
		t.Errorf("truncateStart(12): %v", got)
	}
	if got := tab.clone().truncateStart(25); fmt.Sprint(got) != "[{4 25}]" {
		t.Errorf("truncateStart(25): %v", got)
	}
	if got := tab.clone().truncateStart(0); fmt.Sprint(got) != fmt.Sprint(tab) {
		t.Errorf("truncateStart(0): %v", got)
	}
}
