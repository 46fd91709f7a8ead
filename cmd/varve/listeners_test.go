package main

import (
	"flag"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/varvelog/varve/broker"
)

// resolveListeners runs the path runServe takes from arguments,
// environment and file to the broker's Listeners and the addresses to
// bind.
func resolveListeners(t *testing.T, args []string, env map[string]string) ([]kafkaListener, []broker.Listener, error) {
	t.Helper()
	var s serveFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(nopWriter{})
	s.register(fs)
	if err := resolveSettings(fs, args, func(k string) string { return env[k] }); err != nil {
		return nil, nil, err
	}
	kls, err := s.kafkaListeners(setFlags(fs))
	if err != nil {
		return nil, nil, err
	}
	return kls, brokerListeners(kls), nil
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

func TestListenersParseGood(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want []kafkaListener
	}{
		{
			name: "default invocation is the PLAINTEXT shorthand as before",
			want: []kafkaListener{{Name: "PLAINTEXT", Bind: "127.0.0.1:9092"}},
		},
		{
			name: "shorthand with --advertise",
			args: []string{"--kafka-addr", "0.0.0.0:9092", "--advertise", "broker-1:9092"},
			want: []kafkaListener{{Name: "PLAINTEXT", Bind: "0.0.0.0:9092", Advertise: "broker-1:9092"}},
		},
		{
			name: "shorthand keeps advertising a wildcard bind, as before",
			args: []string{"--kafka-addr", "0.0.0.0:9092"},
			want: []kafkaListener{{Name: "PLAINTEXT", Bind: "0.0.0.0:9092"}},
		},
		{
			name: "advertised-listeners over the shorthand",
			args: []string{"--kafka-addr", "0.0.0.0:9092", "--advertised-listeners", "PLAINTEXT://broker-1:9092"},
			want: []kafkaListener{{Name: "PLAINTEXT", Bind: "0.0.0.0:9092", Advertise: "broker-1:9092"}},
		},
		{
			name: "internal and host-facing listeners",
			args: []string{
				"--listeners", "INTERNAL://0.0.0.0:9092, EXTERNAL://0.0.0.0:19092",
				"--advertised-listeners", "INTERNAL://varve-1:9092,EXTERNAL://localhost:19092",
			},
			want: []kafkaListener{
				{Name: "INTERNAL", Bind: "0.0.0.0:9092", Advertise: "varve-1:9092"},
				{Name: "EXTERNAL", Bind: "0.0.0.0:19092", Advertise: "localhost:19092"},
			},
		},
		{
			name: "a listener not advertised advertises its bound address",
			args: []string{"--listeners", "A_1://127.0.0.1:0,b-2://[::1]:65535,C://localhost:9092", "--advertised-listeners", "C://host.docker.internal:9092"},
			want: []kafkaListener{
				{Name: "A_1", Bind: "127.0.0.1:0"},
				{Name: "b-2", Bind: "[::1]:65535"},
				{Name: "C", Bind: "localhost:9092", Advertise: "host.docker.internal:9092"},
			},
		},
		{
			name: "names are case-sensitive",
			args: []string{"--listeners", "internal://127.0.0.1:1,INTERNAL://127.0.0.1:2"},
			want: []kafkaListener{{Name: "internal", Bind: "127.0.0.1:1"}, {Name: "INTERNAL", Bind: "127.0.0.1:2"}},
		},
		{
			name: "a wildcard bind is fine once advertised, IPv6 too",
			args: []string{"--listeners", "V6://[::]:9092,ANY://:9093", "--advertised-listeners", "V6://[2001:db8::1]:9092,ANY://varve:9093"},
			want: []kafkaListener{{Name: "V6", Bind: "[::]:9092", Advertise: "[2001:db8::1]:9092"}, {Name: "ANY", Bind: ":9093", Advertise: "varve:9093"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, err := resolveListeners(t, tc.args, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestListenersParseBad(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string // a fragment naming the problem
	}{
		{args: []string{"--listeners", "127.0.0.1:9092"}, want: "not NAME://HOST:PORT"},
		{args: []string{"--listeners", "A://127.0.0.1:9092,"}, want: "empty entry"},
		{args: []string{"--listeners", "A://127.0.0.1:1,,B://127.0.0.1:2"}, want: "empty entry"},
		{args: []string{"--listeners", "://127.0.0.1:9092"}, want: `listener name ""`},
		{args: []string{"--listeners", "IN TERNAL://127.0.0.1:9092"}, want: `listener name "IN TERNAL"`},
		{args: []string{"--listeners", "SASL.SSL://127.0.0.1:9092"}, want: `listener name "SASL.SSL"`},
		{args: []string{"--listeners", "A://127.0.0.1:1,A://127.0.0.1:2"}, want: "A given twice"},
		{args: []string{"--listeners", "A://127.0.0.1"}, want: "not HOST:PORT"},
		{args: []string{"--listeners", "A://::1:9092"}, want: "not HOST:PORT"},
		{args: []string{"--listeners", "A://127.0.0.1:65536"}, want: `port "65536"`},
		{args: []string{"--listeners", "A://127.0.0.1:-1"}, want: `port "-1"`},
		{args: []string{"--listeners", "A://127.0.0.1:http"}, want: `port "http"`},
		{args: []string{"--listeners", "A://0.0.0.0:9092"}, want: "A binds \"0.0.0.0:9092\", which clients cannot dial"},
		{args: []string{"--listeners", "A://[::]:9092"}, want: "A binds"},
		{args: []string{"--listeners", "A://:9092"}, want: "A binds"},
		{args: []string{"--listeners", "A://0.0.0.0:1,B://0.0.0.0:2", "--advertised-listeners", "A://h:1"}, want: "B binds"},
		{args: []string{"--listeners", "A://127.0.0.1:1", "--advertised-listeners", "B://h:1"}, want: "B is not a listener"},
		{args: []string{"--listeners", "A://127.0.0.1:1", "--advertised-listeners", "a://h:1"}, want: "a is not a listener"},
		{args: []string{"--listeners", "A://127.0.0.1:1", "--advertised-listeners", "A://h:1,A://h:2"}, want: "A given twice"},
		{args: []string{"--listeners", "A://127.0.0.1:1", "--advertised-listeners", "A://0.0.0.0:1"}, want: "not a wildcard"},
		{args: []string{"--listeners", "A://127.0.0.1:1", "--advertised-listeners", "A://:1"}, want: "not a wildcard"},
		{args: []string{"--listeners", "A://127.0.0.1:1", "--advertised-listeners", "A://h:0"}, want: "port 0"},
		{args: []string{"--listeners", "A://127.0.0.1:1", "--advertised-listeners", "A://h"}, want: "--advertised-listeners: A: address"},
		{args: []string{"--listeners", "A://127.0.0.1:1", "--kafka-addr", "127.0.0.1:9092"}, want: "--listeners replaces --kafka-addr"},
		{args: []string{"--listeners", "A://127.0.0.1:1", "--advertise", "h:1"}, want: "--listeners replaces --advertise"},
		// Set in the environment counts as set.
		{args: []string{"--listeners", "A://127.0.0.1:1"}, env: map[string]string{"VARVE_KAFKA_ADDR": "127.0.0.1:9092"}, want: "--listeners replaces --kafka-addr"},
		{args: []string{"--advertise", "h:1", "--advertised-listeners", "PLAINTEXT://h:1"}, want: "--advertised-listeners replaces --advertise"},
		{args: []string{"--advertised-listeners", "EXTERNAL://h:1"}, want: "EXTERNAL is not a listener (listeners: PLAINTEXT)"},
	} {
		_, _, err := resolveListeners(t, tc.args, tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("args %q env %v: error %v, want one containing %q", tc.args, tc.env, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("args %q: error spans lines: %q", tc.args, err)
		}
	}
}

// TestListenersFeedBrokerConfig checks that the flags, from the command
// line, the environment or the YAML file, become broker.Config.Listeners
// (names and advertised addresses; binding stays in cmd) and that the
// broker accepts them.
func TestListenersFeedBrokerConfig(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "list.yaml")
	if err := os.WriteFile(list, []byte("listeners:\n  - INTERNAL://127.0.0.1:9092\n  - EXTERNAL://0.0.0.0:19092\nadvertised-listeners: EXTERNAL://localhost:19092\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := []broker.Listener{{Name: "INTERNAL"}, {Name: "EXTERNAL", Advertise: "localhost:19092"}}
	wantBind := []string{"127.0.0.1:9092", "0.0.0.0:19092"}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
	}{
		{name: "flags", args: []string{"--listeners", "INTERNAL://127.0.0.1:9092,EXTERNAL://0.0.0.0:19092", "--advertised-listeners", "EXTERNAL://localhost:19092"}},
		{name: "environment", env: map[string]string{
			"VARVE_LISTENERS":            "INTERNAL://127.0.0.1:9092,EXTERNAL://0.0.0.0:19092",
			"VARVE_ADVERTISED_LISTENERS": "EXTERNAL://localhost:19092",
		}},
		{name: "yaml list and string", args: []string{"--config", list}},
		{name: "flag over environment", args: []string{"--advertised-listeners", "EXTERNAL://localhost:19092"}, env: map[string]string{
			"VARVE_LISTENERS":            "INTERNAL://127.0.0.1:9092,EXTERNAL://0.0.0.0:19092",
			"VARVE_ADVERTISED_LISTENERS": "EXTERNAL://elsewhere:1",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kls, got, err := resolveListeners(t, tc.args, tc.env)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("broker listeners %+v, want %+v", got, want)
			}
			var bind []string
			for _, l := range kls {
				bind = append(bind, l.Bind)
			}
			if !slices.Equal(bind, wantBind) {
				t.Fatalf("bind %v, want %v", bind, wantBind)
			}
			cfg := broker.Config{DataDir: dir, Listeners: got}.WithDefaults()
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
	// The default invocation gives the broker what it always got.
	_, got, err := resolveListeners(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []broker.Listener{{Name: "PLAINTEXT"}}) {
		t.Fatalf("default: %+v", got)
	}
}

// TestListenersBindAll binds every listener, and none when one fails.
func TestListenersBindAll(t *testing.T) {
	lns, err := bindListeners([]kafkaListener{{Name: "A", Bind: "127.0.0.1:0"}, {Name: "B", Bind: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(lns) != 2 || lns[0].Addr().String() == lns[1].Addr().String() {
		t.Fatalf("bound %v", lns)
	}
	taken := lns[1].Addr().String()
	_ = lns[0].Close()
	defer lns[1].Close()
	_, err = bindListeners([]kafkaListener{{Name: "A", Bind: lns[0].Addr().String()}, {Name: "B", Bind: taken}})
	if err == nil || !strings.Contains(err.Error(), "kafka listener B") {
		t.Fatalf("error %v, want one naming listener B", err)
	}
	// A was bound before B failed: it must be free again.
	ln, err := net.Listen("tcp", lns[0].Addr().String())
	if err != nil {
		t.Fatalf("listener A left bound: %v", err)
	}
	_ = ln.Close()
}
