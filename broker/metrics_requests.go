package broker

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/protocol"
)

// requestMetrics count and time the Kafka requests this broker answers,
// per API. They live on the Broker (no global registry: several brokers
// share a test process) and ServeAdmin registers them.
type requestMetrics struct {
	requests *prometheus.CounterVec
	failures *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// newRequestMetrics makes the metrics with every served API's series
// present from the start (at zero), so a rate over them is defined before
// the first request.
func newRequestMetrics(apis *apiSet) *requestMetrics {
	m := &requestMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "varve_requests_total", Help: "Kafka requests answered (or failed), by API.",
		}, []string{"api"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "varve_request_failures_total",
			Help: "Kafka requests whose handler failed, by API: the connection is closed (error codes inside answered responses are not counted here).",
		}, []string{"api"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "varve_request_duration_seconds", Help: "Time from a request's decoding to its response, by API (long polls included).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10), // 100 µs to ~26 s
		}, []string{"api"}),
	}
	for _, a := range apis.list {
		name := kmsg.NameForKey(a.key)
		m.requests.WithLabelValues(name)
		m.failures.WithLabelValues(name)
	}
	return m
}

func (m *requestMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.requests, m.failures, m.duration}
}

// observe runs a handler and records it.
func (m *requestMetrics) observe(ctx context.Context, req *protocol.Request, h func(context.Context) (kmsg.Response, error)) (kmsg.Response, error) {
	api := kmsg.NameForKey(req.Key)
	start := time.Now()
	resp, err := h(ctx)
	m.duration.WithLabelValues(api).Observe(time.Since(start).Seconds())
	m.requests.WithLabelValues(api).Inc()
	if err != nil {
		m.failures.WithLabelValues(api).Inc()
	}
	return resp, err
}
