package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ServeAdmin serves the admin HTTP endpoints on ln until Shutdown:
//
//	/healthz       200 "ok" while every partition is healthy, 503 naming
//	               the failed ones otherwise
//	/metrics       Prometheus metrics from this broker's own registry (no
//	               global registry: several brokers share a test process),
//	               the Raft gauges of metrics_raft.go among them
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

	mux := http.NewServeMux()
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
