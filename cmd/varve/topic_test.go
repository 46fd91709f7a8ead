package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/varvelog/varve/integration"
)

// describeWant is topic describe's tab-separated output for a topic of
// one-replica partitions on broker 1, each empty, with the given configs.
func describeWant(t *testing.T, c *integration.Cluster, topic string, configs ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := c.Admin(t).Metadata(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	td := m.Topics[topic]
	var b strings.Builder
	fmt.Fprintf(&b, "topic\t%s\nid\t%s\npartitions\t%d\nreplication factor\t1\n\n", topic, kafkaUUID(td.ID), len(td.Partitions))
	b.WriteString("PARTITION\tLEADER\tEPOCH\tREPLICAS\tISR\tOFFLINE\tLOG-START\tHIGH-WATERMARK\tERROR\n")
	for _, p := range td.Partitions.Sorted() {
		fmt.Fprintf(&b, "%d\t1\t%d\t1\t1\t-\t0\t0\t-\n", p.Partition, p.LeaderEpoch)
	}
	if len(configs) > 0 {
		b.WriteString("\nCONFIG\tVALUE\tSOURCE\n")
		for _, c := range configs {
			k, v, _ := strings.Cut(c, "=")
			fmt.Fprintf(&b, "%s\t%s\tDYNAMIC_TOPIC_CONFIG\n", k, v)
		}
	}
	return b.String()
}

func testTopicRoundTrip(t *testing.T, c *integration.Cluster) {
	b := c.Addr()
	out := mustRun(t, "", "topic", "create", "round-trip", "-p", "2", "-c", "retention.ms=600000", "--brokers", b)
	if out != "created topic round-trip (partitions 2, replication factor 1)\n" {
		t.Fatalf("create: %q", out)
	}
	wantFailure(t, runCLI(t, "", "topic", "create", "round-trip", "--brokers", b), 1,
		`^varve topic create: create topic "round-trip": TOPIC_ALREADY_EXISTS`)

	if out := mustRun(t, "", "topic", "list", "--brokers", b); !strings.Contains(out, "\nround-trip\t2\t1\n") ||
		!strings.HasPrefix(out, "TOPIC\tPARTITIONS\tREPLICATION\n") || strings.Contains(out, "__consumer_offsets") {
		t.Errorf("list:\n%s", out)
	}
	var listed []topicRow
	if err := json.Unmarshal([]byte(mustRun(t, "", "topic", "list", "-o", "json", "--brokers", b)), &listed); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range listed {
		found = found || r == (topicRow{Topic: "round-trip", Partitions: 2, ReplicationFactor: 1})
	}
	if !found {
		t.Errorf("list -o json: %+v", listed)
	}

	if out, want := mustRun(t, "", "topic", "describe", "round-trip", "--brokers", b), describeWant(t, c, "round-trip", "retention.ms=600000"); out != want {
		t.Errorf("describe:\n%s\nwant\n%s", out, want)
	}
	out = mustRun(t, "", "topic", "alter-config", "round-trip", "-c", "retention.ms=1234", "-c", "max.message.bytes=2048", "--brokers", b)
	if out != "altered topic round-trip: set retention.ms=1234, set max.message.bytes=2048\n" {
		t.Errorf("alter-config: %q", out)
	}
	if out, want := mustRun(t, "", "topic", "describe", "round-trip", "--brokers", b), describeWant(t, c, "round-trip", "max.message.bytes=2048", "retention.ms=1234"); out != want {
		t.Errorf("describe after alter-config:\n%s\nwant\n%s", out, want)
	}
	out = mustRun(t, "", "topic", "alter-config", "round-trip", "--delete-config", "retention.ms", "--brokers", b)
	if out != "altered topic round-trip: deleted retention.ms\n" {
		t.Errorf("alter-config --delete-config: %q", out)
	}
	var d topicDescription
	if err := json.Unmarshal([]byte(mustRun(t, "", "topic", "describe", "round-trip", "-o", "json", "--all-configs", "--brokers", b)), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Partitions) != 2 || d.Partitions[1].Partition != 1 || d.Partitions[1].Leader != 1 || d.ReplicationFactor != 1 {
		t.Errorf("describe -o json partitions: %+v", d)
	}
	sources := map[string]string{}
	for _, cfg := range d.Configs {
		sources[cfg.Name] = cfg.Source + "=" + *cfg.Value
	}
	if sources["max.message.bytes"] != "DYNAMIC_TOPIC_CONFIG=2048" || !strings.HasPrefix(sources["retention.ms"], "DEFAULT_CONFIG=") {
		t.Errorf("describe --all-configs -o json configs: %v", sources)
	}
	wantFailure(t, runCLI(t, "", "topic", "alter-config", "round-trip", "-c", "no.such.config=1", "--brokers", b), 1,
		`^varve topic alter-config: alter configs of "round-trip": `)

	if out := mustRun(t, "", "topic", "delete", "round-trip", "--brokers", b); out != "deleted topic round-trip\n" {
		t.Errorf("delete: %q", out)
	}
	wantFailure(t, runCLI(t, "", "topic", "describe", "round-trip", "--brokers", b), 1, `^varve topic describe: unknown topic "round-trip"\n$`)
	wantFailure(t, runCLI(t, "", "topic", "delete", "round-trip", "--brokers", b), 1, `^varve topic delete: unknown topic "round-trip"\n$`)
	wantFailure(t, runCLI(t, "", "topic", "alter-config", "round-trip", "-c", "retention.ms=1", "--brokers", b), 1,
		`^varve topic alter-config: unknown topic "round-trip"\n$`)
}

// Topic ids print as Kafka's Uuid.toString does: URL-safe base64, no padding.
func TestKafkaUUID(t *testing.T) {
	var zero, ones, mixed kadm.TopicID
	for i := range ones {
		ones[i] = 0xff
		mixed[i] = byte(i * 17)
	}
	for _, tc := range []struct {
		id   kadm.TopicID
		want string
	}{
		{zero, "AAAAAAAAAAAAAAAAAAAAAA"},
		{ones, "_____________________w"},
		{mixed, "ABEiM0RVZneImaq7zN3u_w"},
	} {
		if got := kafkaUUID(tc.id); got != tc.want {
			t.Errorf("%x: %q, want %q", tc.id[:], got, tc.want)
		}
	}
}

// The commands that change something answer in JSON with -o json too.
func testChangesAsJSON(t *testing.T, c *integration.Cluster) {
	b := c.Addr()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"topic", "create", "as-json", "-p", "2", "-r", "1"}, `{"topic":"as-json","partitions":2,"replication_factor":1,"internal":false}`},
		{[]string{"topic", "alter-config", "as-json", "-c", "retention.ms=5000", "--delete-config", "max.message.bytes"}, `{"topic":"as-json","set":{"retention.ms":"5000"},"deleted":["max.message.bytes"]}`},
		{[]string{"topic", "alter-config", "as-json", "--delete-config", "retention.ms"}, `{"topic":"as-json","set":{},"deleted":["retention.ms"]}`},
		{[]string{"topic", "delete", "as-json"}, `{"topic":"as-json","deleted":true}`},
	} {
		out := mustRun(t, "", append(tc.args, "-o", "json", "--brokers", b)...)
		var compact bytes.Buffer
		if err := json.Compact(&compact, []byte(out)); err != nil || compact.String() != tc.want {
			t.Errorf("%v -o json: %q (%v), want %s", tc.args, out, err, tc.want)
		}
	}
	commitAt(t, c, "g-json", "lagged", 0)
	if out := mustRun(t, "", "group", "delete", "g-json", "-o", "json", "--brokers", b); out != "{\n  \"group\": \"g-json\",\n  \"deleted\": true\n}\n" {
		t.Errorf("group delete -o json: %q", out)
	}
}
