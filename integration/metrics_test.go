package integration

import (
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRequestMetrics: /metrics counts and times the requests a broker
// answers, per API: after a produce of 20 records and a read back, Produce,
// Fetch and Metadata have requests and latency observations.
func TestRequestMetrics(t *testing.T) {
	c := NewCluster(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.Broker(0).ServeAdmin(ln) }()
	createTopic(t, c.Admin(t), "metered", 1, nil)
	cl := c.Client(t, kgo.DefaultProduceTopic("metered"))
	for i := range 20 {
		if err := cl.ProduceSync(testContext(t, 10*time.Second), &kgo.Record{Value: []byte(strconv.Itoa(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(consumeAll(t, c, "metered")); got != 20 {
		t.Fatalf("read back %d records, want 20", got)
	}
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	value := func(metric, api string) float64 {
		t.Helper()
		m := regexp.MustCompile(`(?m)^` + metric + `\{api="` + api + `"\} ([0-9.e+]+)$`).FindSubmatch(body)
		if m == nil {
			t.Fatalf("no %s for %s in /metrics", metric, api)
		}
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		return v
	}
	if n := value("varve_requests_total", "Produce"); n < 20 {
		t.Fatalf("varve_requests_total{api=Produce} = %v, want at least the 20 sync produces", n)
	}
	for _, api := range []string{"Produce", "Fetch", "Metadata"} {
		if n := value("varve_request_duration_seconds_count", api); n < 1 {
			t.Fatalf("no latency observation for %s", api)
		}
	}
	if n := value("varve_request_failures_total", "Produce"); n != 0 {
		t.Fatalf("%v failed Produce requests", n)
	}
	// Every served API's series exists from the start, at zero.
	if n := value("varve_requests_total", "DeleteGroups"); n != 0 {
		t.Fatalf("varve_requests_total{api=DeleteGroups} = %v with no such request sent", n)
	}
}
