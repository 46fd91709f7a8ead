package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/varvelog/varve/broker"
	"github.com/varvelog/varve/replication"
)

// serveFlags are varve serve's settings, as flags, environment variables
// and YAML keys.
type serveFlags struct {
	id                  int
	data                string
	kafkaAddr           string
	advertise           string
	listeners           string
	advertisedListeners string
	adminAddr           string
	metricsGroupLag     bool
	logFormat           string
	logLevel            string
	autoCreateTopics    bool
	numPartitions       int
	raftAddr            string
	raftAdvertise       string
	peers               string
	clusterID           string
	writeCaching        bool
	limits              serveLimits
	raftDialOverride    string
	config              string
}

func (s *serveFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&s.id, "id", 1, "broker node id")
	fs.StringVar(&s.data, "data", "./varve-data", "data directory")
	fs.StringVar(&s.kafkaAddr, "kafka-addr", "127.0.0.1:9092", "Kafka listener address to bind (shorthand for one listener named PLAINTEXT)")
	fs.StringVar(&s.advertise, "advertise", "", "host:port clients are told to connect to (default: the Kafka listener's address)")
	fs.StringVar(&s.listeners, "listeners", "", "named Kafka listeners to bind as NAME://HOST:PORT,... (Kafka's listeners; replaces --kafka-addr and --advertise)")
	fs.StringVar(&s.advertisedListeners, "advertised-listeners", "", "addresses clients are told per listener as NAME://HOST:PORT,... (Kafka's advertised.listeners; default: the bound address)")
	fs.StringVar(&s.adminAddr, "admin-addr", "127.0.0.1:9644", "admin HTTP address (/healthz, /metrics, /debug/pprof); empty disables")
	fs.BoolVar(&s.metricsGroupLag, "metrics-group-lag", false, "add consumer lag per group and partition to /metrics (varve_group_lag; a series per committed partition of every group)")
	fs.StringVar(&s.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&s.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.BoolVar(&s.autoCreateTopics, "auto-create-topics", false, "let Metadata requests create missing topics (auto.create.topics.enable)")
	fs.IntVar(&s.numPartitions, "num-partitions", 1, "partitions of an auto-created topic or of one created with -1 (num.partitions)")
	fs.StringVar(&s.raftAddr, "raft-addr", "127.0.0.1:9093", "Raft listener address to bind (all replication traffic)")
	fs.StringVar(&s.raftAdvertise, "raft-advertise", "", "Raft address peers dial (default: this broker's entry in --peers, else --raft-addr)")
	fs.StringVar(&s.peers, "peers", "", "the metadata group's voters as id@host:raftport,... (identical on every broker; a broker not listed joins the running cluster as a learner); empty: a cluster of one")
	fs.StringVar(&s.clusterID, "cluster-id", "", "cluster id fixed at the first start (default: derived from --peers, random without)")
	fs.BoolVar(&s.writeCaching, "write-caching", false, "acknowledge writes before the Raft WAL's fsync (faster; a simultaneous power loss of a majority can lose acknowledged writes)")
	fs.StringVar(&s.raftDialOverride, "raft-dial-override", "", "for fault testing, proxies and NAT: dial a peer's raft address at another one, as RAFTADDR=DIALADDR,... (the peer keeps its identity; only the TCP dial goes elsewhere)")
	s.limits.register(fs)
	fs.StringVar(&s.config, "config", "", "optional YAML file with any of these flags as keys")
}

// serveLimits are the limits that protect a broker from its clients (the
// README's Limits section), with the broker's defaults.
type serveLimits struct {
	maxRequestBytes         int
	maxFetchBytes           int
	maxDecompressedBytes    int64
	maxConnections          int
	maxConnectionsPerIP     int
	idleTimeout             time.Duration
	frameTimeout            time.Duration
	maxPartitionsPerRequest int
	queuedMaxRequestBytes   int64
}

func (l *serveLimits) register(fs *flag.FlagSet) {
	fs.IntVar(&l.maxRequestBytes, "max-request-bytes", 100<<20, "largest request frame accepted; a larger one closes the connection (socket.request.max.bytes)")
	fs.IntVar(&l.maxFetchBytes, "max-fetch-bytes", 55<<20, "cap on one fetch response, whatever the client asks (fetch.max.bytes)")
	fs.Int64Var(&l.maxDecompressedBytes, "max-decompressed-bytes", 64<<20, "cap on what one produced batch may decompress to; over it: MESSAGE_TOO_LARGE (at least 1 MiB)")
	fs.IntVar(&l.maxConnections, "max-connections", 10_000, "cap on open Kafka connections, all listeners together (max.connections); negative: no cap")
	fs.IntVar(&l.maxConnectionsPerIP, "max-connections-per-ip", 1_000, "cap on open Kafka connections from one client IP (max.connections.per.ip); negative: no cap")
	fs.DurationVar(&l.idleTimeout, "idle-timeout", 10*time.Minute, "close a connection that sends no request for this long (connections.max.idle.ms)")
	fs.DurationVar(&l.frameTimeout, "frame-timeout", 30*time.Second, "close a connection whose started request has not fully arrived after this long")
	fs.IntVar(&l.maxPartitionsPerRequest, "max-partitions-per-request", 100_000, "cap on the partitions one request names; over it the connection is closed")
	fs.Int64Var(&l.queuedMaxRequestBytes, "queued-max-request-bytes", 500<<20, "bound on the request bytes held at once over all connections; past it connections wait (queued.max.request.bytes); negative: no bound")
}

// apply copies the limits into cfg, refusing values the broker's int32
// fields cannot hold.
func (l *serveLimits) apply(cfg *broker.Config) error {
	var errs []error
	for _, f := range []struct {
		name string
		v    int
		dst  *int32
	}{{"--max-request-bytes", l.maxRequestBytes, &cfg.MaxRequestBytes}, {"--max-fetch-bytes", l.maxFetchBytes, &cfg.MaxFetchBytes}} {
		if f.v < 1 || f.v > math.MaxInt32 {
			errs = append(errs, fmt.Errorf("%s %d out of range (1 to %d)", f.name, f.v, math.MaxInt32))
			continue
		}
		*f.dst = int32(f.v)
	}
	if l.idleTimeout <= 0 || l.frameTimeout <= 0 || l.maxPartitionsPerRequest < 1 {
		errs = append(errs, errors.New("--idle-timeout, --frame-timeout and --max-partitions-per-request must be positive"))
	}
	cfg.MaxDecompressedBytes = l.maxDecompressedBytes
	cfg.MaxConnections = l.maxConnections
	cfg.MaxConnectionsPerIP = l.maxConnectionsPerIP
	cfg.IdleTimeout = l.idleTimeout
	cfg.FrameTimeout = l.frameTimeout
	cfg.MaxPartitionsPerRequest = l.maxPartitionsPerRequest
	if l.queuedMaxRequestBytes == 0 {
		errs = append(errs, errors.New("--queued-max-request-bytes must not be 0"))
	}
	cfg.QueuedMaxRequestBytes = l.queuedMaxRequestBytes
	return errors.Join(errs...)
}

// resolveSettings applies the YAML file, then the environment, under the
// flags given on the command line.
func resolveSettings(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	envName := func(name string) string { return "VARVE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")) }
	// The config file may itself come from the environment.
	if !set["config"] {
		if v := getenv(envName("config")); v != "" {
			if err := fs.Set("config", v); err != nil {
				return err
			}
		}
	}
	fileValues := map[string]string{}
	if path := fs.Lookup("config").Value.String(); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read config: %w", err)
		}
		var raw map[string]any
		if err := yaml.Unmarshal(b, &raw); err != nil {
			return fmt.Errorf("config %s: %w", path, err)
		}
		for k, v := range raw {
			if fs.Lookup(k) == nil || k == "config" {
				return fmt.Errorf("config %s: unknown key %q", path, k)
			}
			fileValues[k] = yamlValue(v)
		}
	}
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || f.Name == "config" {
			return
		}
		v, ok := getenv(envName(f.Name)), true
		if v == "" {
			v, ok = fileValues[f.Name]
		}
		if ok && v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", f.Name, err))
			}
		}
	})
	return errors.Join(errs...)
}

// yamlValue is a YAML value as the flag's string: a sequence joins with
// commas, so lists (listeners, peers) may be written either way.
func yamlValue(v any) string {
	items, ok := v.([]any)
	if !ok {
		return fmt.Sprint(v)
	}
	parts := make([]string, len(items))
	for i, it := range items {
		parts[i] = fmt.Sprint(it)
	}
	return strings.Join(parts, ",")
}

// setFlags names the flags given by any source: resolveSettings applies
// the environment and the file with fs.Set, so they count as given.
func setFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

func runServe(args []string) error {
	var s serveFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	s.register(fs)
	fs.SetOutput(io.Discard) // main prints an error once, on one line
	if err := resolveSettings(fs, args, os.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandHelp(os.Stdout, fs, "varve serve [flags] (each flag also as env VARVE_FLAG_NAME and YAML key flag-name)", serveExamples)
			return nil
		}
		return usageError{err}
	}
	logger, err := newLogger(os.Stderr, s.logFormat, s.logLevel)
	if err != nil {
		return usageError{err}
	}
	if s.id < 0 || s.id > 1<<31-1 {
		return usagef("--id %d out of range", s.id)
	}
	peers, err := parsePeers(s.peers)
	if err != nil {
		return usageError{err}
	}
	kls, err := s.kafkaListeners(setFlags(fs))
	if err != nil {
		return usageError{err}
	}
	raftDial, err := parseDialOverride(s.raftDialOverride)
	if err != nil {
		return usageError{err}
	}
	advertise := s.raftAdvertise
	for _, p := range peers {
		if p.ID == int32(s.id) && advertise == "" {
			advertise = p.Addr
		}
	}
	cfg := broker.Config{
		NodeID:            int32(s.id),
		DataDir:           s.data,
		RaftAddr:          s.raftAddr,
		RaftAdvertise:     advertise,
		Peers:             peers,
		ClusterID:         s.clusterID,
		RaftDial:          raftDial,
		WriteCaching:      s.writeCaching,
		Listeners:         brokerListeners(kls),
		AutoCreateTopics:  s.autoCreateTopics,
		DefaultPartitions: int32(s.numPartitions),
		MetricsGroupLag:   s.metricsGroupLag,
		Logger:            logger,
	}
	if err := s.limits.apply(&cfg); err != nil {
		return usageError{err}
	}
	b, err := broker.New(cfg)
	if err != nil {
		return err
	}
	lns, err := bindListeners(kls)
	if err != nil {
		_ = b.Shutdown(context.Background())
		return err
	}
	errc := make(chan error, len(lns)+1)
	for i, ln := range lns {
		name := kls[i].Name
		logger.Info("kafka listener ready", "listener", name, "addr", ln.Addr().String())
		if kls[i].Advertise == "" {
			warnWildcard(logger, name, ln.Addr())
		}
		go func() { errc <- b.Serve(name, ln) }()
	}
	if s.adminAddr != "" {
		aln, err := net.Listen("tcp", s.adminAddr)
		if err != nil {
			_ = b.Shutdown(context.Background())
			return fmt.Errorf("admin listener: %w", err)
		}
		logger.Info("admin listener ready", "addr", aln.Addr().String())
		go func() { errc <- b.ServeAdmin(aln) }()
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case sig := <-sigs:
		logger.Info("shutting down", "signal", sig.String())
	case err := <-errc:
		if err != nil {
			logger.Error("listener failed; shutting down", "err", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return b.Shutdown(ctx)
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// parsePeers reads --peers: id@host:port, comma-separated.
func parsePeers(s string) ([]replication.Peer, error) {
	var out []replication.Peer
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	for _, item := range strings.Split(s, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(item), "@")
		n, err := strconv.ParseInt(id, 10, 32)
		if !ok || err != nil || n < 0 {
			return nil, fmt.Errorf("--peers: %q is not id@host:port", item)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("--peers: %q: %w", item, err)
		}
		out = append(out, replication.Peer{ID: int32(n), Addr: addr})
	}
	return out, nil
}
