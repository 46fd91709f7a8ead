package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varvelog/varve/client"
	"github.com/varvelog/varve/integration"
)

func TestConfig(t *testing.T) {
	if got := client.ParseBrokers(" a:1, ,b:2,"); strings.Join(got, "|") != "a:1|b:2" {
		t.Errorf("ParseBrokers: %q", got)
	}
	d := client.DefaultConfig()
	if strings.Join(d.Brokers, ",") != "127.0.0.1:9092" || d.ClientID == "" || d.DialTimeout <= 0 || d.ProbeTimeout <= 0 {
		t.Errorf("DefaultConfig: %+v", d)
	}
	err := client.Config{Brokers: []string{"nohost", "h:0", "h:9092", ":9092"}}.Validate()
	if err == nil || strings.Count(err.Error(), "want host:port") != 3 {
		t.Errorf("Validate: %v, want three problems", err)
	}
}

// A refused connection fails New at once with the dial error; a broker
// that accepts but never answers fails it at ProbeTimeout.
func TestNewUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	_ = ln.Close()
	start := time.Now()
	_, _, err = client.New(context.Background(), client.Config{Brokers: []string{closed}})
	var ue *client.UnreachableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("closed port: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a refused connection took %v", d)
	}

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			conn, err := silent.Accept()
			if err != nil {
				return
			}
			defer conn.Close() // hold it open, say nothing
		}
	}()
	start = time.Now()
	_, _, err = client.New(context.Background(), client.Config{Brokers: []string{silent.Addr().String()}, ProbeTimeout: 300 * time.Millisecond})
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "no answer within 300ms") {
		t.Fatalf("silent broker: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("a silent broker took %v", d)
	}
}

func TestAgainstABroker(t *testing.T) {
	c := integration.NewCluster(t, integration.Brokers(1))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, adm, err := client.New(ctx, client.Config{Brokers: []string{c.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	_, err = client.Topic(ctx, adm, "nope")
	if !errors.Is(err, kerr.UnknownTopicOrPartition) || err.Error() != `unknown topic "nope"` {
		t.Errorf("unknown topic: %v", err)
	}
	if _, err := adm.CreateTopic(ctx, 4, 1, nil, "keys"); err != nil {
		t.Fatal(err)
	}
	td, err := client.Topic(ctx, adm, "keys")
	if err != nil || len(td.Partitions) != 4 {
		t.Fatalf("topic: %+v %v", td, err)
	}

	// New's producer places keyed records by murmur2, as KeyPartition says.
	var records []*kgo.Record
	for i := range 50 {
		records = append(records, &kgo.Record{Topic: "keys", Key: []byte(fmt.Sprintf("user-%d", i)), Value: []byte("v")})
	}
	if err := cl.ProduceSync(ctx, records...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for _, r := range records {
		if want := client.KeyPartition(r.Key, 4); int(r.Partition) != want {
			t.Errorf("key %s went to %d, KeyPartition says %d", r.Key, r.Partition, want)
		}
	}

	// Resolve: times, counts from the end, clamping.
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "times"); err != nil {
		t.Fatal(err)
	}
	for _, ms := range []int64{1000, 2000, 3000} {
		r := &kgo.Record{Topic: "times", Value: []byte("v"), Timestamp: time.UnixMilli(ms)}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		spec string
		at   int64
	}{
		{"beginning", 0}, {"end", 3}, {"1", 1}, {"99", 3}, {"-1", 2}, {"-99", 0},
		{"@0", 0}, {"@1500", 1}, {"@2000", 1}, {"@3001", 3},
	} {
		spec, err := client.ParseOffsetSpec(tc.spec, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		got, err := spec.Resolve(ctx, adm, "times")
		if err != nil || len(got) != 1 || got[0] != (client.PartitionOffsets{Start: 0, End: 3, At: tc.at}) {
			t.Errorf("%s: %+v %v, want at %d", tc.spec, got, err, tc.at)
		}
	}
	if _, err := (client.OffsetSpec{}).Resolve(ctx, adm, "times", 0, 5); err == nil || !strings.Contains(err.Error(), "no partition 5") {
		t.Errorf("partition 5 of a one-partition topic: %v", err)
	}
}
