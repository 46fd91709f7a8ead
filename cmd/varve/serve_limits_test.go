package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/varvelog/varve/broker"
)

// The limit flags' defaults are the broker's own, so `varve serve` with no
// flags runs with exactly the limits the README documents.
func TestLimitFlagDefaultsMatchBroker(t *testing.T) {
	var s serveFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	s.register(fs)
	if err := resolveSettings(fs, nil, func(string) string { return "" }); err != nil {
		t.Fatal(err)
	}
	var got broker.Config
	if err := s.limits.apply(&got); err != nil {
		t.Fatal(err)
	}
	want := broker.Config{}.WithDefaults()
	if got.MaxRequestBytes != want.MaxRequestBytes || got.MaxFetchBytes != want.MaxFetchBytes ||
		got.MaxDecompressedBytes != want.MaxDecompressedBytes || got.MaxConnections != want.MaxConnections ||
		got.MaxConnectionsPerIP != want.MaxConnectionsPerIP || got.IdleTimeout != want.IdleTimeout ||
		got.FrameTimeout != want.FrameTimeout || got.MaxPartitionsPerRequest != want.MaxPartitionsPerRequest {
		t.Fatalf("flag defaults %+v differ from the broker's %+v", got, want)
	}
}

// Each limit comes from a flag, the environment (VARVE_ + the flag name)
// or the YAML file (the flag name as key), in that order of precedence.
func TestLimitSettings(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "varve.yaml")
	yaml := "max-connections: 50\nmax-connections-per-ip: 5\nidle-timeout: 90s\nmax-decompressed-bytes: 2097152\n"
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"VARVE_CONFIG":                     cfgFile,
		"VARVE_MAX_CONNECTIONS_PER_IP":     "7",
		"VARVE_FRAME_TIMEOUT":              "2s",
		"VARVE_MAX_PARTITIONS_PER_REQUEST": "300",
	}
	var s serveFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	s.register(fs)
	args := []string{"--max-request-bytes", "4096", "--max-fetch-bytes", "8192", "--max-connections", "60"}
	if err := resolveSettings(fs, args, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	var cfg broker.Config
	if err := s.limits.apply(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.MaxRequestBytes != 4096 || cfg.MaxFetchBytes != 8192 || cfg.MaxConnections != 60 || // flags
		cfg.MaxConnectionsPerIP != 7 || cfg.FrameTimeout != 2*time.Second || cfg.MaxPartitionsPerRequest != 300 || // environment
		cfg.IdleTimeout != 90*time.Second || cfg.MaxDecompressedBytes != 2<<20 { // file
		t.Fatalf("resolved %+v", cfg)
	}
}

func TestLimitSettingsRefuseBadValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-request-bytes", "3000000000"}, "--max-request-bytes"},
		{[]string{"--max-fetch-bytes", "0"}, "--max-fetch-bytes"},
		{[]string{"--idle-timeout", "-1s"}, "--idle-timeout"},
		{[]string{"--max-partitions-per-request", "0"}, "--max-partitions-per-request"},
	} {
		var s serveFlags
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		s.register(fs)
		if err := resolveSettings(fs, tc.args, func(string) string { return "" }); err != nil {
			t.Fatal(err)
		}
		err := s.limits.apply(&broker.Config{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%v: error %v, want one naming %s", tc.args, err, tc.want)
		}
	}
}
