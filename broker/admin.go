package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ServeAdmin serves the admin HTTP endpoints on ln until Shutdown:
//
//	/healthz       200 "ok" while every partition is healthy, 503 naming
//	               the failed ones otherwise
//	/readyz        200 "ready" once the broker answers Kafka requests
//	               truthfully (see readiness), 503 with the reason before
//	               that and while it shuts down
//	/metrics       Prometheus metrics from this broker's own registry (no
//	               global registry: several brokers share a test process),
//	               the Raft gauges of metrics_raft.go, the per-API request
//	               counts and latencies of metrics_requests.go, the data-path
//	               metrics of metrics_broker.go, the partition gauges of
//	               metrics_partitions.go and, opt-in, the consumer lag of
//	               metrics_lag.go among them
//	/debug/pprof/  the Go profiler
func (b *Broker) ServeAdmin(ln net.Listener) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "varve_partitions", Help: "Partitions held by this broker.",
	}, func() float64 { return float64(len(b.localGroups())) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "varve_partitions_failed", Help: "Partitions that refuse writes after a storage failure.",
	}, func() float64 { return float64(len(b.failedPartitions())) }))
	reg.MustRegister(newRaftCollector(b))
	reg.MustRegister(b.reqMetrics.collectors()...)
	reg.MustRegister(b.metrics.collectors(b)...)
	reg.MustRegister(newPartitionCollector(b))
	if b.cfg.MetricsGroupLag {
		reg.MustRegister(newLagCollector(b))
	}

	rd := &readiness{}
	b.goTracked(func() { rd.watch(b) })

	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if reason := rd.notReady(b); reason != "" {
			http.Error(w, "not ready: "+reason, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if failed := b.failedPartitions(); len(failed) > 0 {
			http.Error(w, fmt.Sprintf("storage failure in %v", failed), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		<-b.ctx.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// failedPartitions names the partitions with a sticky storage failure.
func (b *Broker) failedPartitions() []string {
	var out []string
	for _, g := range b.localGroups() {
		if _, err := g.Ready(); err != nil && g.Log().Err() != nil {
			out = append(out, g.Name())
		}
	}
	return out
}

// readiness answers /readyz. A broker is ready once every configured Kafka
// listener has started, the check Serve makes before it answers
// anything (waitServing: metadata caught up with the group, this broker's
// registration applied, the handlers' view reconciled) has passed, and
// the leaders of its replicas replicate to it again (waitReplicated). It
// stays ready until shutdown: a later metadata election does not make the
// answers untruthful, and a container orchestrator restarting a broker
// that is merely waiting for a new metadata leader would only slow the
// cluster down. /healthz reports storage failures.
type readiness struct {
	ready   atomic.Bool
	waiting atomic.Pointer[string] // what waitReplicated waits for, once serving
}

// watch waits for the listeners, then for waitServing, and marks the
// broker ready. It runs on a tracked goroutine and returns at shutdown.
func (r *readiness) watch(b *Broker) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for b.listenersStarted() < len(b.cfg.Listeners) {
		select {
		case <-b.ctx.Done():
			return
		case <-tick.C:
		}
	}
	if b.waitServing(b.ctx) == nil {
		b.waitReplicated(b.ctx, func(s string) { r.waiting.Store(&s) }) // ready_replicas.go
		r.ready.Store(true)
	}
}

// notReady is the reason the broker is not ready, "" when it is. Cheap and
// non-blocking: it reads state the broker already keeps and makes no
// calls to other brokers.
func (r *readiness) notReady(b *Broker) string {
	if b.ctx.Err() != nil {
		return "shutting down"
	}
	if r.ready.Load() {
		return ""
	}
	if n, want := b.listenersStarted(), len(b.cfg.Listeners); n < want {
		return fmt.Sprintf("%d of %d Kafka listeners started", n, want)
	}
	if b.machine.Leader() < 0 {
		return "no metadata leader"
	}
	st := b.meta.State()
	if have, ok := st.Brokers[b.cfg.NodeID]; !ok || !sameBroker(have, b.registration()) {
		return "metadata not caught up or registration not applied"
	}
	b.recMu.Lock()
	reconciled := b.reconciled
	b.recMu.Unlock()
	if reconciled < st.Index {
		return fmt.Sprintf("partition view reconciled to metadata index %d of %d", reconciled, st.Index)
	}
	if w := r.waiting.Load(); w != nil {
		return *w
	}
	return "metadata catching up"
}

// listenersStarted counts the configured Kafka listeners Serve has been
// called for.
func (b *Broker) listenersStarted() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.advertised)
}
