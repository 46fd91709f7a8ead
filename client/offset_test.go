package client

import (
	"strings"
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
		{"@2023-11-14T22:13:20Z", OffsetSpec{Kind: OffsetTime, N: 1_700_000_000_000}},
		{"@2023-11-14T23:13:20.5+01:00", OffsetSpec{Kind: OffsetTime, N: 1_700_000_000_500}},
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
	for _, bad := range []string{"", "yesterday", "@", "@-5", "@1h", "-0s", "-h", "1.5", "--5", "@2023-11-14", "@1969-12-31T00:00:00Z"} {
		if _, err := ParseOffsetSpec(bad, now); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseTime(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"1600000000000", 1_600_000_000_000},
		{"2023-11-14T22:13:20Z", 1_700_000_000_000},
		{"2023-11-14T22:13:20.123456Z", 1_700_000_000_123},
		{"2023-11-14T17:13:20-05:00", 1_700_000_000_000},
		{"-1h", 1_700_000_000_000 - 3_600_000},
		{"-1h30m", 1_700_000_000_000 - 5_400_000},
	} {
		if got, err := ParseTime(tc.in, now); err != nil || got != tc.want {
			t.Errorf("%q: %d %v, want %d", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "-5", "-0s", "now", "2023-11-14", "2023-11-14 22:13:20", "@1600000000000", "1969-12-31T23:59:59Z"} {
		if got, err := ParseTime(bad, now); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %d, error %v, want one line", bad, got, err)
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
