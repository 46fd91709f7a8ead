package main

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/varvelog/varve/replication"
)

func TestSettingsPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "varve.yaml")
	if err := os.WriteFile(cfgFile, []byte("id: 3\ndata: /from/file\nkafka-addr: 0.0.0.0:1111\nauto-create-topics: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"VARVE_CONFIG":     cfgFile,
		"VARVE_DATA":       "/from/env",
		"VARVE_ADMIN_ADDR": "127.0.0.1:1",
	}
	var s serveFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	s.register(fs)
	if err := resolveSettings(fs, []string{"--kafka-addr", "127.0.0.1:2222"}, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if s.id != 3 || s.data != "/from/env" || s.kafkaAddr != "127.0.0.1:2222" || s.adminAddr != "127.0.0.1:1" || !s.autoCreateTopics {
		t.Fatalf("resolved %+v: want id from the file, data and admin from the environment, kafka-addr from the flag", s)
	}
	if s.logFormat != "text" || s.numPartitions != 1 {
		t.Fatalf("defaults lost: %+v", s)
	}
}

func TestSettingsRejectUnknownKeysAndBadValues(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		file, want string
		env        map[string]string
	}{
		{"no-such-flag: 1\n", "unknown key", nil},
		{"id: seven\n", "id", nil},
		{"", "num-partitions", map[string]string{"VARVE_NUM_PARTITIONS": "many"}},
	} {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(tc.file), 0o644); err != nil {
			t.Fatal(err)
		}
		var s serveFlags
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		s.register(fs)
		err := resolveSettings(fs, []string{"--config", p}, func(k string) string { return tc.env[k] })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("file %q env %v: error %v, want one naming %q", tc.file, tc.env, err, tc.want)
		}
	}
}

func TestNewLogger(t *testing.T) {
	for _, tc := range []struct {
		format, level string
		ok            bool
	}{{"text", "info", true}, {"json", "debug", true}, {"xml", "info", false}, {"json", "loud", false}} {
		_, err := newLogger(os.Stderr, tc.format, tc.level)
		if (err == nil) != tc.ok {
			t.Fatalf("format %s level %s: %v", tc.format, tc.level, err)
		}
	}
}

func TestParsePeers(t *testing.T) {
	got, err := parsePeers("1@127.0.0.1:9093, 2@broker-2:9093,3@[::1]:19093")
	if err != nil {
		t.Fatal(err)
	}
	want := []replication.Peer{{ID: 1, Addr: "127.0.0.1:9093"}, {ID: 2, Addr: "broker-2:9093"}, {ID: 3, Addr: "[::1]:19093"}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if got, err := parsePeers(""); err != nil || got != nil {
		t.Fatalf("empty: %v %v", got, err)
	}
	for _, bad := range []string{"1", "x@h:1", "-1@h:1", "1@nohost", "1@h:1,,2@h:2"} {
		if _, err := parsePeers(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
