package client

import (
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func TestParseOffsetSpec(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	for _, tc := range []struct {
		in   string
		want OffsetSpec
	}{
		{"beginning", OffsetSpec{Kind: OffsetBeginning}},
		{"earliest", OffsetSpec{Kind: OffsetBeginning}},
		{"END", OffsetSpec{Kind: OffsetEnd}},
		{"latest", OffsetSpec{Kind: OffsetEnd}},
		{"0", OffsetSpec{Kind: OffsetExact, N: 0}},
		{"1234", OffsetSpec{Kind: OffsetExact, N: 1234}},
		{"-10", OffsetSpec{Kind: OffsetFromEnd, N: 10}},
		{"@1600000000000", OffsetSpec{Kind: OffsetTime, N: 1_600_000_000_000}},
		{"-1h", OffsetSpec{Kind: OffsetTime, N: 1_700_000_000_000 - 3_600_000}},
		{"-90s", OffsetSpec{Kind: OffsetTime, N: 1_700_000_000_000 - 90_000}},
		{"-1h30m", OffsetSpec{Kind: OffsetTime, N: 1_700_000_000_000 - 5_400_000}},
	} {
		got, err := ParseOffsetSpec(tc.in, now)
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v %v, want %+v", tc.in, got, err, tc.want)
		}
		if back, err := ParseOffsetSpec(got.String(), now); err != nil || back != got {
			t.Errorf("%q: String %q reads back as %+v %v", tc.in, got.String(), back, err)
		}
	}
	for _, bad := range []string{"", "yesterday", "@", "@-5", "@1h", "-0s", "-h", "1.5", "--5"} {
		if _, err := ParseOffsetSpec(bad, now); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestOffsetSpecKgo(t *testing.T) {
	for _, tc := range []struct {
		spec OffsetSpec
		want kgo.Offset
	}{
		{OffsetSpec{Kind: OffsetBeginning}, kgo.NewOffset().AtStart()},
		{OffsetSpec{Kind: OffsetEnd}, kgo.NewOffset().AtEnd()},
		{OffsetSpec{Kind: OffsetExact, N: 5}, kgo.NewOffset().At(5)},
		{OffsetSpec{Kind: OffsetFromEnd, N: 3}, kgo.NewOffset().AtEnd().Relative(-3)},
		{OffsetSpec{Kind: OffsetTime, N: 77}, kgo.NewOffset().AfterMilli(77)},
	} {
		if got := tc.spec.Kgo(); got.String() != tc.want.String() {
			t.Errorf("%v: %v, want %v", tc.spec, got, tc.want)
		}
	}
}
