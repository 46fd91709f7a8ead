package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/varvelog/varve/broker"
)

func TestHealthAsksTheRightPath(t *testing.T) {
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths = append(paths, r.URL.Path)
		_, _ = w.Write([]byte("ok\n"))
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	if err := runHealth([]string{"--admin-addr", addr}); err != nil {
		t.Fatalf("health: %v", err)
	}
	if err := runHealth([]string{"--admin-addr", addr, "--ready"}); err != nil {
		t.Fatalf("health --ready: %v", err)
	}
	if strings.Join(paths, " ") != "/healthz /readyz" {
		t.Fatalf("asked %v, want /healthz then /readyz", paths)
	}
	if err := runHealth([]string{"--admin-addr", addr, "extra"}); err == nil {
		t.Fatal("a stray argument was accepted")
	}
}

func TestHealthReportsTheReasonOnOneLine(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not ready: no metadata leader\nsecond line", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	err := runHealth([]string{"--admin-addr", strings.TrimPrefix(srv.URL, "http://"), "--ready"})
	if err == nil {
		t.Fatal("a 503 passed")
	}
	msg := err.Error()
	if !strings.Contains(msg, "503") || !strings.Contains(msg, "no metadata leader") || strings.Contains(msg, "\n") {
		t.Fatalf("error %q: want one line with the status and the reason", msg)
	}
}

func TestHealthFailsWithoutABroker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	err = runHealth([]string{"--admin-addr", addr})
	if err == nil || strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), `Get "`) {
		t.Fatalf("error %v: want one line, the URL not repeated", err)
	}

	// A server that never answers: the timeout ends the check.
	stall := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer stall.Close()
	start := time.Now()
	err = runHealth([]string{"--admin-addr", strings.TrimPrefix(stall.URL, "http://"), "--timeout", "200ms"})
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("stalled server: %v after %v", err, time.Since(start))
	}
}

// TestHealthAgainstABroker runs the check against a real broker's admin
// listener: /readyz refuses until the Kafka listener serves, then passes.
func TestHealthAgainstABroker(t *testing.T) {
	raftLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(broker.Config{DataDir: t.TempDir(), RaftListener: raftLn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Shutdown(ctx)
	})
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = b.ServeAdmin(adminLn) }()
	admin := adminLn.Addr().String()

	if err := runHealth([]string{"--admin-addr", admin}); err != nil {
		t.Fatalf("/healthz of a healthy broker: %v", err)
	}
	err = runHealth([]string{"--admin-addr", admin, "--ready"})
	if err == nil || !strings.Contains(err.Error(), "0 of 1 Kafka listeners started") {
		t.Fatalf("/readyz before the Kafka listener: %v", err)
	}

	kafkaLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = b.Serve("PLAINTEXT", kafkaLn) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := runHealth([]string{"--admin-addr", admin, "--ready"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never passed: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
