package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/broker"
)

func TestTopicLifecycle(t *testing.T) {
	c := NewCluster(t)
	adm := c.Admin(t)
	ctx := testContext(t, 30*time.Second)

	first := createTopic(t, adm, "life", 2, nil)
	if first.ID == [16]byte{} || first.NumPartitions != 2 || first.ReplicationFactor != 1 {
		t.Fatalf("create response %+v", first)
	}
	// Creating it again, a bad name, a bad replication factor, a bad config.
	for _, tc := range []struct {
		name    string
		parts   int32
		rf      int16
		configs map[string]*string
		want    error
	}{
		{"life", 1, 1, nil, kerr.TopicAlreadyExists},
		{"bad/name", 1, 1, nil, kerr.InvalidTopicException},
		{"..", 1, 1, nil, kerr.InvalidTopicException},
		{"rf3", 1, 3, nil, kerr.InvalidReplicationFactor},
		{"zero", 0, 1, nil, kerr.InvalidPartitions},
		{"cfg", 1, 1, map[string]*string{"retention.ms": kadm.StringPtr("soon")}, kerr.InvalidConfig},
		{"cfg2", 1, 1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}, kerr.InvalidConfig},
		{"cfg3", 1, 1, map[string]*string{"no.such.config": kadm.StringPtr("1")}, kerr.InvalidConfig},
	} {
		resp, err := adm.CreateTopic(ctx, tc.parts, tc.rf, tc.configs, tc.name)
		if err == nil {
			err = resp.Err
		}
		if !errors.Is(err, tc.want) {
			t.Fatalf("create %q: %v, want %v", tc.name, err, tc.want)
		}
	}
	// Grow it.
	if _, err := adm.CreatePartitions(ctx, 2, "life"); err != nil {
		t.Fatal(err)
	}
	if resp, _ := adm.CreatePartitions(ctx, -1, "life"); resp["life"].Err == nil {
		t.Fatal("shrinking was accepted")
	}
	tds, err := adm.ListTopics(ctx, "life")
	if err != nil || len(tds["life"].Partitions) != 4 || tds["life"].ID != first.ID {
		t.Fatalf("after growing: %+v %v", tds["life"], err)
	}
	// Write a record, delete the topic, re-create it: new id, empty.
	cl := c.Client(t, kgo.DefaultProduceTopic("life"))
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("old")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if resp, err := adm.DeleteTopics(ctx, "life"); err != nil || resp["life"].Err != nil {
		t.Fatalf("delete: %v %v", err, resp["life"].Err)
	}
	// A fresh client, so no cached metadata answers for the broker.
	if tds, err := c.Admin(t).ListTopics(ctx); err != nil || tds.Has("life") {
		t.Fatalf("deleted topic still listed (%v)", err)
	}
	again := createTopic(t, adm, "life", 1, nil)
	if again.ID == first.ID {
		t.Fatal("a re-created topic reused the old id")
	}
	ends, err := adm.ListEndOffsets(ctx, "life")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := ends.Lookup("life", 0); o.Offset != 0 {
		t.Fatalf("re-created topic holds %d records", o.Offset)
	}
	// Topics survive a restart with their ids.
	c.Restart(0)
	tds, err = c.Admin(t).ListTopics(ctx, "life")
	if err != nil || tds["life"].ID != again.ID {
		t.Fatalf("after restart: %+v %v", tds["life"], err)
	}
}

func TestTopicConfigs(t *testing.T) {
	c := NewCluster(t)
	adm := c.Admin(t)
	ctx := testContext(t, 30*time.Second)
	createTopic(t, adm, "conf", 1, map[string]*string{"retention.ms": kadm.StringPtr("60000")})
	describe := func() map[string]kadm.Config {
		t.Helper()
		rcs, err := adm.DescribeTopicConfigs(ctx, "conf")
		if err != nil {
			t.Fatal(err)
		}
		rc, err := rcs.On("conf", nil)
		if err != nil || rc.Err != nil {
			t.Fatalf("describe: %v %v", err, rc.Err)
		}
		out := map[string]kadm.Config{}
		for _, cfg := range rc.Configs {
			out[cfg.Key] = cfg
		}
		return out
	}
	got := describe()
	if v := got["retention.ms"]; val(v) != "60000" || v.Source != kmsg.ConfigSourceDynamicTopicConfig {
		t.Fatalf("retention.ms %+v", v)
	}
	if v := got["segment.bytes"]; val(v) != "1073741824" || v.Source != kmsg.ConfigSourceDefaultConfig {
		t.Fatalf("segment.bytes %+v", v)
	}
	// Incremental: set one, delete another.
	resp, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "max.message.bytes", Value: kadm.StringPtr("2000")},
		{Op: kadm.DeleteConfig, Name: "retention.ms"},
	}, "conf")
	if err != nil || resp[0].Err != nil {
		t.Fatalf("incremental alter: %v %+v", err, resp)
	}
	got = describe()
	if val(got["max.message.bytes"]) != "2000" || got["retention.ms"].Source != kmsg.ConfigSourceDefaultConfig {
		t.Fatalf("after alter: %+v %+v", got["max.message.bytes"], got["retention.ms"])
	}
	// The new limit applies at once.
	cl := c.Client(t, kgo.DefaultProduceTopic("conf"), kgo.ProducerBatchCompression(kgo.NoCompression()))
	err = cl.ProduceSync(ctx, &kgo.Record{Value: make([]byte, 3000)}).FirstErr()
	if !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("produce over the altered limit: %v", err)
	}
	// A bad value changes nothing.
	resp, _ = adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "segment.bytes", Value: kadm.StringPtr("-5")}}, "conf")
	if !errors.Is(resp[0].Err, kerr.InvalidConfig) {
		t.Fatalf("bad value: %v", resp[0].Err)
	}
	// Configs survive a restart.
	c.Restart(0)
	adm = c.Admin(t)
	if got := describe(); val(got["max.message.bytes"]) != "2000" {
		t.Fatalf("after restart: %+v", got["max.message.bytes"])
	}
	// Broker configs are readable and read-only.
	brs, err := adm.DescribeBrokerConfigs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, rc := range brs {
		for _, cfg := range rc.Configs {
			if cfg.Key == "auto.create.topics.enable" && val(cfg) == "false" && cfg.Source == kmsg.ConfigSourceStaticBrokerConfig {
				found = true
			}
		}
	}
	if !found {
		t.Fatalf("broker configs lack a static auto.create.topics.enable=false: %+v", brs)
	}
}

func TestAutoCreateOnlyWhenEnabled(t *testing.T) {
	for _, enabled := range []bool{false, true} {
		c := NewCluster(t, WithConfig(func(cfg *broker.Config) { cfg.AutoCreateTopics = enabled; cfg.DefaultPartitions = 3 }))
		ctx := testContext(t, 10*time.Second)
		cl := c.Client(t, kgo.AllowAutoTopicCreation(), kgo.DefaultProduceTopic("auto"), kgo.RecordRetries(2))
		err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("x")}).FirstErr()
		if enabled {
			if err != nil {
				t.Fatalf("auto-create on: %v", err)
			}
			tds, _ := c.Admin(t).ListTopics(ctx, "auto")
			if len(tds["auto"].Partitions) != 3 {
				t.Fatalf("auto-created topic has %d partitions", len(tds["auto"].Partitions))
			}
		} else if !errors.Is(err, kerr.UnknownTopicOrPartition) {
			t.Fatalf("auto-create off: %v, want UNKNOWN_TOPIC_OR_PARTITION", err)
		}
		// A client that does not allow creation never creates, even when
		// the broker would.
		md := kmsg.NewPtrMetadataRequest()
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr("never")
		md.Topics = append(md.Topics, rt)
		md.AllowAutoTopicCreation = false
		resp, err := md.RequestWith(ctx, c.Client(t))
		if err != nil || resp.Topics[0].ErrorCode != kerr.UnknownTopicOrPartition.Code {
			t.Fatalf("metadata without auto-create: %v %+v", err, resp)
		}
	}
}

func TestClusterIdentityAndMetadata(t *testing.T) {
	c := NewCluster(t)
	ctx := testContext(t, 10*time.Second)
	adm := c.Admin(t)
	createTopic(t, adm, "md", 3, nil)
	meta, err := adm.Metadata(ctx, "md")
	if err != nil {
		t.Fatal(err)
	}
	id := meta.Cluster
	if len(id) != 22 || meta.Controller != 1 || len(meta.Brokers) != 1 {
		t.Fatalf("metadata: cluster %q controller %d brokers %v", id, meta.Controller, meta.Brokers)
	}
	host, port, _ := net.SplitHostPort(c.Addr())
	if b := meta.Brokers[0]; b.Host != host || strconv.Itoa(int(b.Port)) != port || b.NodeID != 1 {
		t.Fatalf("broker advertised as %+v, want %s", b, c.Addr())
	}
	for _, p := range meta.Topics["md"].Partitions {
		if p.Leader != 1 || p.LeaderEpoch < 0 || len(p.Replicas) != 1 || len(p.ISR) != 1 || p.Err != nil {
			t.Fatalf("partition %+v", p)
		}
	}
	c.Restart(0)
	meta2, err := c.Admin(t).Metadata(ctx)
	if err != nil || meta2.Cluster != id {
		t.Fatalf("cluster id after restart %q, want %q (%v)", meta2.Cluster, id, err)
	}
	desc := kmsg.NewPtrDescribeClusterRequest()
	dresp, err := desc.RequestWith(ctx, c.Client(t))
	if err != nil || dresp.ClusterID != id || len(dresp.Brokers) != 1 {
		t.Fatalf("describe cluster: %v %+v", err, dresp)
	}
}

func TestFetchLongPollWokenByData(t *testing.T) {
	c := NewCluster(t)
	createTopic(t, c.Admin(t), "poll", 1, nil)
	id := topicID(t, c, "poll")
	cl := c.Client(t)
	ctx := testContext(t, 60*time.Second)
	req := kmsg.NewPtrFetchRequest()
	// A fetch that waits up to 30 s for 1 byte: answered with data only if
	// the produce below wakes it; a timeout would answer empty.
	req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 30_000, 1, 1<<20
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic, rt.TopicID = "poll", id
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.PartitionMaxBytes, rp.CurrentLeaderEpoch, rp.LastFetchedEpoch = 1<<20, -1, -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	type result struct {
		resp *kmsg.FetchResponse
		err  error
		took time.Duration
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		resp, err := req.RequestWith(ctx, cl)
		done <- result{resp, err, time.Since(start)}
	}()
	prod := c.Client(t, kgo.DefaultProduceTopic("poll"))
	if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte("wake")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	p := r.resp.Topics[0].Partitions[0]
	if p.ErrorCode != 0 || len(p.RecordBatches) == 0 || p.HighWatermark != 1 || p.LastStableOffset != 1 {
		t.Fatalf("long poll answered %+v after %v", p, r.took)
	}
	if r.took > 25*time.Second {
		t.Fatalf("long poll answered only at its deadline (%v)", r.took)
	}
	// An empty partition answers an empty, non-nil record set at once
	// with MaxWait 0.
	req.MaxWaitMillis = 0
	req.Topics[0].Partitions[0].FetchOffset = 1
	resp, err := req.RequestWith(ctx, cl)
	if err != nil || resp.Topics[0].Partitions[0].RecordBatches == nil || len(resp.Topics[0].Partitions[0].RecordBatches) != 0 {
		t.Fatalf("empty fetch: %v %+v", err, resp)
	}
}

func TestProduceErrors(t *testing.T) {
	c := NewCluster(t)
	createTopic(t, c.Admin(t), "errs", 1, nil)
	id := topicID(t, c, "errs")
	// Raw requests: kgo would rewrite acks.
	send := func(mod func(*kmsg.ProduceRequest)) (*kmsg.ProduceResponse, error) {
		req := kmsg.NewPtrProduceRequest()
		req.Version = 13
		req.Acks, req.TimeoutMillis = -1, 5000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic, rt.TopicID = "errs", id
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Records = rawBatch(-1, -1, -1, "v")
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		mod(req)
		return rawRequest(t, c.Addr(), req).(*kmsg.ProduceResponse), nil
	}
	cases := []struct {
		name string
		mod  func(*kmsg.ProduceRequest)
		want *kerr.Error
	}{
		{"unknown partition", func(r *kmsg.ProduceRequest) { r.Topics[0].Partitions[0].Partition = 7 }, kerr.UnknownTopicOrPartition},
		{"unknown topic id", func(r *kmsg.ProduceRequest) { r.Topics[0].TopicID = [16]byte{1} }, kerr.UnknownTopicID},
		{"bad crc", func(r *kmsg.ProduceRequest) { b := r.Topics[0].Partitions[0].Records; b[len(b)-1] ^= 1 }, kerr.CorruptMessage},
		{"truncated", func(r *kmsg.ProduceRequest) {
			b := r.Topics[0].Partitions[0].Records
			r.Topics[0].Partitions[0].Records = b[:len(b)-3]
		}, kerr.CorruptMessage},
		{"no records", func(r *kmsg.ProduceRequest) { r.Topics[0].Partitions[0].Records = nil }, kerr.InvalidRecord},
		{"two batches", func(r *kmsg.ProduceRequest) {
			b := r.Topics[0].Partitions[0].Records
			r.Topics[0].Partitions[0].Records = append(append([]byte(nil), b...), b...)
		}, kerr.InvalidRecord},
		{"bad acks", func(r *kmsg.ProduceRequest) { r.Acks = 2 }, kerr.InvalidRequiredAcks},
		{"transactional", func(r *kmsg.ProduceRequest) { r.TransactionID = kmsg.StringPtr("tx") }, kerr.TransactionalIDAuthorizationFailed},
	}
	for _, tc := range cases {
		resp, err := send(tc.mod)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		p := resp.Topics[0].Partitions[0]
		if p.ErrorCode != tc.want.Code {
			t.Fatalf("%s: code %d, want %s", tc.name, p.ErrorCode, tc.want.Message)
		}
	}
	// Nothing of the above was written; the connection still works.
	resp, err := send(func(*kmsg.ProduceRequest) {})
	if err != nil || resp.Topics[0].Partitions[0].ErrorCode != 0 || resp.Topics[0].Partitions[0].BaseOffset != 0 {
		t.Fatalf("good produce after the bad ones: %v %+v", err, resp)
	}
}

func TestLogAppendTimeTopic(t *testing.T) {
	c := NewCluster(t)
	createTopic(t, c.Admin(t), "lat", 1, map[string]*string{"message.timestamp.type": kadm.StringPtr("LogAppendTime")})
	cl := c.Client(t, kgo.DefaultProduceTopic("lat"))
	ctx := testContext(t, 10*time.Second)
	old := time.UnixMilli(1_000_000_000_000)
	before := time.Now().Add(-time.Second)
	r, err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("v"), Timestamp: old}).First()
	if err != nil {
		t.Fatal(err)
	}
	recs := consumeAll(t, c, "lat")
	if len(recs) != 1 || !recs[0].Timestamp.After(before) || recs[0].Attrs.TimestampType() != 1 {
		t.Fatalf("record %+v (produced at %v), want a broker timestamp after %v", recs[0], r.Timestamp, before)
	}
}

func val(c kadm.Config) string { return c.MaybeValue() }

// TestAcksZeroFailureClosesConnection: an acks=0 produce gets no response;
// when it fails the broker closes the connection, as Kafka does, so the
// client refreshes its metadata instead of writing into the void.
func TestAcksZeroFailureClosesConnection(t *testing.T) {
	c := NewCluster(t)
	createTopic(t, c.Admin(t), "zero", 1, nil)
	id := topicID(t, c, "zero")
	conn, err := net.DialTimeout("tcp", c.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("raw"))
	produce := func(partition int32, corr int32) {
		req := kmsg.NewPtrProduceRequest()
		req.Version, req.Acks, req.TimeoutMillis = 13, 0, 1000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic, rt.TopicID = "zero", id
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition, rp.Records = partition, rawBatch(-1, -1, -1, "fire-and-forget")
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		if _, err := conn.Write(f.AppendRequest(nil, req, corr)); err != nil {
			t.Fatal(err)
		}
	}
	produce(0, 1) // succeeds, no response
	produce(9, 2) // unknown partition: the connection closes
	buf := make([]byte, 1)
	if n, err := conn.Read(buf); err == nil || n != 0 {
		t.Fatalf("read after a failed acks=0 produce: %d bytes, %v; want the connection closed", n, err)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the connection stayed open")
	}
	recs := consumeAll(t, c, "zero")
	if len(recs) != 1 || string(recs[0].Value) != "fire-and-forget" {
		t.Fatalf("log holds %d records", len(recs))
	}
}

// TestConcurrentTopicChanges runs produce, metadata, config changes and
// partition growth at once (meant for -race), then checks that every
// acknowledged record is there.
func TestConcurrentTopicChanges(t *testing.T) {
	c := NewCluster(t)
	createTopic(t, c.Admin(t), "busy", 2, nil)
	ctx := testContext(t, 60*time.Second)
	done := make(chan struct{})
	errs := make(chan error, 3)
	go func() {
		adm := c.Admin(t)
		for i := range 20 {
			v := fmt.Sprint(1_000_000 + i)
			if _, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "max.message.bytes", Value: &v}}, "busy"); err != nil {
				errs <- err
				return
			}
			if i%5 == 0 {
				if _, err := adm.UpdatePartitions(ctx, 3+i/5, "busy"); err != nil {
					errs <- err
					return
				}
			}
		}
		errs <- nil
	}()
	go func() {
		adm := c.Admin(t)
		for {
			select {
			case <-done:
				errs <- nil
				return
			default:
			}
			if _, err := adm.Metadata(ctx, "busy"); err != nil {
				errs <- err
				return
			}
		}
	}()
	cl := c.Client(t, kgo.DefaultProduceTopic("busy"))
	acked := map[string]bool{}
	for i := range 300 {
		v := fmt.Sprint("v", i)
		if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte(v), Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		acked[v] = true
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	close(done)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	for _, r := range consumeAll(t, c, "busy") {
		delete(acked, string(r.Value))
	}
	if len(acked) != 0 {
		t.Fatalf("%d acknowledged records missing", len(acked))
	}
}

// TestShutdownEndsLongPolls: a Fetch waiting for data must not hold up a
// graceful shutdown.
func TestShutdownEndsLongPolls(t *testing.T) {
	c := NewCluster(t)
	createTopic(t, c.Admin(t), "idle", 1, nil)
	id := topicID(t, c, "idle")
	conn, err := net.DialTimeout("tcp", c.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := kmsg.NewPtrFetchRequest()
	req.Version, req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 16, 120_000, 1, 1<<20
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic, rt.TopicID = "idle", id
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.PartitionMaxBytes, rp.CurrentLeaderEpoch, rp.LastFetchedEpoch = 1<<20, -1, -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID("raw"))
	if _, err := conn.Write(f.AppendRequest(nil, req, 1)); err != nil {
		t.Fatal(err)
	}
	// The fetch must be parked in the broker before the shutdown starts
	// (a request arriving after it is refused, which is not what this
	// tests). Nothing observable says "parked", so give the loopback
	// round trip a moment; the shutdown deadline below is far shorter
	// than the fetch's 120 s, which is what the test is about.
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	if err := c.Broker(0).Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with a parked long poll: %v after %v", err, time.Since(start))
	}
	// The fetch got its (empty) answer before the connection closed.
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var size [4]byte
	if _, err := io.ReadFull(conn, size[:]); err != nil {
		t.Fatalf("no answer to the parked fetch: %v", err)
	}
}

// TestInitProducerIDAlwaysNew: without a transactional id every call gets a
// fresh id, even one that names an existing id and epoch, so no client can
// fence another's producer id.
func TestInitProducerIDAlwaysNew(t *testing.T) {
	c := NewCluster(t)
	first := rawRequest(t, c.Addr(), kmsg.NewPtrInitProducerIDRequest()).(*kmsg.InitProducerIDResponse)
	req := kmsg.NewPtrInitProducerIDRequest()
	req.Version, req.ProducerID, req.ProducerEpoch = 4, first.ProducerID, first.ProducerEpoch
	again := rawRequest(t, c.Addr(), req).(*kmsg.InitProducerIDResponse)
	if first.ErrorCode != 0 || again.ErrorCode != 0 || again.ProducerID == first.ProducerID || again.ProducerEpoch != 0 {
		t.Fatalf("first %+v, again %+v", first, again)
	}
	// Ids are never reused across a restart.
	c.Restart(0)
	after := rawRequest(t, c.Addr(), kmsg.NewPtrInitProducerIDRequest()).(*kmsg.InitProducerIDResponse)
	if after.ProducerID <= again.ProducerID {
		t.Fatalf("id %d after restart, issued %d before", after.ProducerID, again.ProducerID)
	}
}

// TestOffsetForLeaderEpochOnEmptyPartition: the epoch Metadata names (the
// leader's Raft term) is known to the epoch table before the first batch,
// so OffsetForLeaderEpoch(epoch) on an empty partition is (epoch, 0).
func TestOffsetForLeaderEpochOnEmptyPartition(t *testing.T) {
	c := NewCluster(t)
	createTopic(t, c.Admin(t), "fresh", 1, nil)
	_, epoch := c.Broker(0).PartitionLeader("fresh", 0)
	if epoch < 1 {
		t.Fatalf("metadata epoch %d", epoch)
	}
	req := kmsg.NewPtrOffsetForLeaderEpochRequest()
	req.Version = 4
	rt := kmsg.NewOffsetForLeaderEpochRequestTopic()
	rt.Topic = "fresh"
	rp := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
	rp.CurrentLeaderEpoch, rp.LeaderEpoch = epoch, epoch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp := rawRequest(t, c.Addr(), req).(*kmsg.OffsetForLeaderEpochResponse)
	p := resp.Topics[0].Partitions[0]
	if p.ErrorCode != 0 || p.LeaderEpoch != epoch || p.EndOffset != 0 {
		t.Fatalf("answer %+v, want epoch %d ending at 0", p, epoch)
	}
}

// TestPartitionLimit: a client cannot make the broker open partitions
// without bound; past the limit CreateTopics, its validate-only form and
// CreatePartitions answer POLICY_VIOLATION and create nothing.
func TestPartitionLimit(t *testing.T) {
	c := NewCluster(t, WithConfig(func(cfg *broker.Config) { cfg.MaxPartitions = 5 }))
	adm := c.Admin(t)
	ctx := testContext(t, 10*time.Second)
	createTopic(t, adm, "a", 3, nil)
	if _, err := adm.CreateTopic(ctx, 3, 1, nil, "b"); !errors.Is(err, kerr.PolicyViolation) {
		t.Fatalf("create past the limit: %v", err)
	}
	vresp, err := adm.ValidateCreateTopics(ctx, 3, 1, nil, "b")
	if err != nil || !errors.Is(vresp["b"].Err, kerr.PolicyViolation) {
		t.Fatalf("validate-only create past the limit: %v %v", err, vresp["b"].Err)
	}
	resp, err := adm.UpdatePartitions(ctx, 6, "a")
	if err == nil {
		err = resp["a"].Err
	}
	if !errors.Is(err, kerr.PolicyViolation) {
		t.Fatalf("grow past the limit: %v", err)
	}
	createTopic(t, adm, "b", 2, nil) // exactly at the limit
	tds, err := c.Admin(t).ListTopics(ctx)
	if err != nil || len(tds["a"].Partitions) != 3 || len(tds["b"].Partitions) != 2 {
		t.Fatalf("topics after the refusals: %+v %v", tds, err)
	}
}
