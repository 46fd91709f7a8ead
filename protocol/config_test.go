package protocol

import (
	"strings"
	"testing"
	"time"
)

func TestValidateReportsEveryProblem(t *testing.T) {
	cfg := Config{MaxConnections: -1, MaxConnectionsPerIP: -1} // and every other field zero
	err := cfg.Validate()
	if err == nil {
		t.Fatal("zero Config validated")
	}
	for _, want := range []string{"Versions", "MaxRequestBytes", "MaxInFlight", "IdleTimeout", "FrameTimeout", "MaxConnections", "MaxConnectionsPerIP", "MaxPartitionsPerRequest"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}

func TestValidateVersionTable(t *testing.T) {
	for _, tc := range []struct {
		name  string
		table map[int16]VersionRange
		want  string // "" = valid
	}{
		{"valid", testTable, ""},
		{"unknown_to_kmsg", map[int16]VersionRange{1000: {0, 0}}, "kmsg does not know"},
		{"min_above_max", map[int16]VersionRange{3: {5, 4}}, "invalid"},
		{"negative_min", map[int16]VersionRange{3: {-1, 4}}, "invalid"},
		{"above_kmsg_max", map[int16]VersionRange{18: {0, 99}}, "above kmsg's max"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Versions: func(k int16) (VersionRange, bool) {
				vr, ok := tc.table[k]
				return vr, ok
			}}.withDefaults()
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatal(err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}

// A table that claims every key gets a bounded report.
func TestValidateCapsKeyProblems(t *testing.T) {
	cfg := Config{Versions: func(int16) (VersionRange, bool) { return VersionRange{0, 0}, true }}.withDefaults()
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "more Versions problems") {
		t.Fatalf("error %v", err)
	}
	if n := strings.Count(err.Error(), "\n") + 1; n > maxReportedKeyProblems+1 {
		t.Fatalf("%d lines reported", n)
	}
}

func TestNewServerDefaults(t *testing.T) {
	s, err := NewServer(Config{Versions: testVersions}, newFakeHandler())
	if err != nil {
		t.Fatal(err)
	}
	c := s.cfg
	if c.MaxRequestBytes != 100<<20 || c.MaxInFlight != 32 || c.IdleTimeout != 10*time.Minute ||
		c.FrameTimeout != 30*time.Second || c.MaxConnections != 0 || c.MaxConnectionsPerIP != 0 ||
		c.MaxPartitionsPerRequest != 100_000 || c.Logger == nil {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if _, err := NewServer(Config{Versions: testVersions}, nil); err == nil {
		t.Fatal("nil Handler accepted")
	}
	if _, err := NewServer(Config{Versions: testVersions, MaxRequestBytes: 7}, newFakeHandler()); err == nil {
		t.Fatal("MaxRequestBytes 7 accepted")
	}
	shared := NewConnLimits(5, 0)
	if _, err := NewServer(Config{Versions: testVersions, Conns: shared, MaxConnectionsPerIP: 2}, newFakeHandler()); err == nil {
		t.Fatal("Conns together with MaxConnectionsPerIP accepted")
	}
}
