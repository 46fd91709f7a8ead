package protocol

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// An acks=0 produce gets no response; the next request's response is the
// next thing on the wire.
func TestNilResponseWritesNothing(t *testing.T) {
	ts := startServer(t, Config{}, newFakeHandler())
	c := dial(t, ts.addr)
	for _, v := range []int16{3, 9, 11} {
		c.send(produceAcks0(""), v)
		c.roundTrip(metadataReq(), 9)
	}
}

// A Handler error closes the connection after the responses queued before
// it, and the requests pipelined after it are never answered.
func TestHandlerErrorFlushesThenCloses(t *testing.T) {
	ts := startServer(t, Config{}, newFakeHandler())
	c := dial(t, ts.addr)
	a, corrA := c.frame(metadataReq(), 1)
	b, _ := c.frame(produceAcks0("fail"), 9)
	d, _ := c.frame(metadataReq(), 1)
	c.write(append(append(a, b...), d...))
	req := metadataReq()
	req.SetVersion(1)
	if got, _ := c.recv(req); got != corrA {
		t.Fatalf("correlation id %d, want %d", got, corrA)
	}
	c.expectClosed(5 * time.Second)
	checkHealthy(t, ts.addr)
}

func TestHandlerBugsCloseOnlyTheirConnection(t *testing.T) {
	ts := startServer(t, Config{}, newFakeHandler())
	healthy := dial(t, ts.addr)
	healthy.roundTrip(metadataReq(), 1)
	for _, group := range []string{"panic", "wrong"} {
		t.Run(group, func(t *testing.T) {
			c := dial(t, ts.addr)
			c.send(heartbeat(group), 4)
			c.expectClosed(5 * time.Second)
			healthy.roundTrip(metadataReq(), 1)
		})
	}
}

// Shutdown lets the request in progress finish and its response out, closes
// idle connections at once, stops accepting, and returns once all is done.
func TestShutdownGraceful(t *testing.T) {
	h := newFakeHandler()
	ts := startServer(t, Config{}, h)
	idle := dial(t, ts.addr)
	idle.roundTrip(metadataReq(), 1)
	busy := dial(t, ts.addr)
	req := heartbeat("slow")
	corr := busy.send(req, 4)
	<-h.entered

	shutdownErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shutdownErr <- ts.Shutdown(ctx)
	}()
	select {
	case <-ts.serveDone:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Shutdown")
	}
	if ts.serveErr != nil {
		t.Fatalf("Serve returned %v, want nil", ts.serveErr)
	}
	idle.expectClosed(5 * time.Second)
	if nc, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		nc.Close()
		t.Fatal("dial succeeded after Shutdown")
	}
	select {
	case err := <-shutdownErr:
		t.Fatalf("Shutdown returned %v while a request was in progress", err)
	default:
	}

	close(h.release)
	if got, _ := busy.recv(req); got != corr {
		t.Fatalf("correlation id %d, want %d", got, corr)
	}
	busy.expectClosed(5 * time.Second)
	if err := <-shutdownErr; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if addrs := ts.Addrs(); len(addrs) != 0 {
		t.Errorf("Addrs() after Shutdown = %v", addrs)
	}
}

// When Shutdown's context expires, Handler contexts are cancelled and every
// connection is closed; Shutdown still waits for the goroutines.
func TestShutdownForced(t *testing.T) {
	h := newFakeHandler()
	ts := startServer(t, Config{}, h)
	c := dial(t, ts.addr)
	c.send(heartbeat("block"), 4)
	<-h.entered

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := ts.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want %v", err, context.DeadlineExceeded)
	}
	if err := <-h.ctxErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("handler context error %v, want %v", err, context.Canceled)
	}
	c.expectClosed(5 * time.Second)
}

func TestServeAfterShutdown(t *testing.T) {
	s, err := NewServer(Config{Versions: testVersions}, newFakeHandler())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown of an idle server: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Shutdown = %v, want ErrServerClosed", err)
	}
	if _, err := ln.Accept(); err == nil {
		t.Fatal("Serve after Shutdown left the listener open")
	}
}

// Serve may run on several listeners; Shutdown stops them all.
func TestServeSeveralListeners(t *testing.T) {
	ts := startServer(t, Config{}, newFakeHandler())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	go func() { second <- ts.Serve(ln) }()
	checkHealthy(t, ln.Addr().String())
	checkHealthy(t, ts.addr)
	if n := len(ts.Addrs()); n != 2 {
		t.Errorf("Addrs() has %d addresses, want 2", n)
	}
	if err := ts.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatalf("second Serve = %v, want nil", err)
	}
}
