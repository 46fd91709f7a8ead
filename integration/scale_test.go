package integration

// The scale run (DESIGN.md, "Scale and speed targets"): 1,000 partitions at
// RF 3 on three `varve serve` processes on one machine, with production
// timings. It measures the time to elect every leader, idle CPU, RSS and
// goroutines per broker, term changes while idle, and failover after a
// SIGKILL, and asserts the targets. Outside CI (it takes ~20 minutes):
//
//	VARVE_SCALE=1 go test -run TestScale1000Partitions -timeout 40m -v ./integration/
//
// VARVE_SCALE_IDLE sets the idle window (default 10m; 2m for a quick run),
// VARVE_SCALE_OUT names a file for the numbers as JSON, and
// VARVE_SCALE_PROFILE a file for a 30 s CPU profile of broker 1 taken
// right after the idle window (the cluster still idle), and
// VARVE_SCALE_LOGS a directory that keeps the brokers' logs (default: the
// test's temporary directory, removed at the end).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	scaleTopic      = "scale"
	scalePartitions = 1000
	scaleRF         = 3
	scaleBrokers    = 3
	clockTicks      = 100 // USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s
	scaleCommand    = "VARVE_SCALE=1 go test -run TestScale1000Partitions -timeout 40m -v ./integration/"

	targetIdleCPUPercent = 25.0
	targetFailoverP99    = 6 * time.Second
	failoverCap          = 2 * time.Minute
	rejoinCap            = 2 * time.Minute
	settleCap            = 3 * time.Minute
)

// scaleResult is what the run measured; VARVE_SCALE_OUT gets it as JSON.
type scaleResult struct {
	Date       string `json:"date"`
	GoVersion  string `json:"go_version"`
	Commit     string `json:"commit"` // git describe --always --dirty of the tree the binary was built from
	CPUs       int    `json:"cpus"`
	Partitions int    `json:"partitions"`
	RF         int    `json:"replication_factor"`
	Brokers    int    `json:"brokers"`

	CreateTopicsSeconds float64 `json:"create_topics_seconds"`
	AllLeadersSeconds   float64 `json:"all_leaders_seconds"`   // CreateTopics sent → every broker's Metadata names all leaders
	ReplicasOpenSeconds float64 `json:"replicas_open_seconds"` // → every broker runs all its replicas
	ReadyLeadersSeconds float64 `json:"ready_leaders_seconds"` // → the groups' ready leaders add up to every partition
	SettleSeconds       float64 `json:"settle_seconds"`        // → every leader is its preferred replica
	SettleBalanced      bool    `json:"settle_balanced"`

	IdleSeconds     float64 `json:"idle_seconds"`
	IdleTermChanges uint64  `json:"idle_term_changes"`          // sum over brokers of varve_raft_term_sum deltas
	IdleGroupTerms  uint64  `json:"idle_group_term_increments"` // the largest broker's delta: ~ elections, each replica counted once
	IdleLoadAvgMean float64 `json:"idle_loadavg1_mean"`
	IdleLoadAvgMax  float64 `json:"idle_loadavg1_max"`
	// Share of the idle window in which some task waited for a CPU or
	// for I/O (Linux PSI "some", /proc/pressure): the machine is shared.
	IdleCPUPressurePct float64           `json:"idle_cpu_pressure_some_percent"`
	IdleIOPressurePct  float64           `json:"idle_io_pressure_some_percent"`
	IdleMetaTermChange uint64            `json:"idle_metadata_term_changes"`
	IdleLoadAvg        [2]string         `json:"idle_loadavg_start_end"`
	PerBroker          []scaleBrokerIdle `json:"brokers_idle"`
	// The idle window in 10 s samples; quiet ones saw no term change in
	// any group, stormy ones did.
	IdleWindows         []idleWindow `json:"idle_windows"`
	QuietWindows        int          `json:"idle_quiet_windows"`
	StormWindows        int          `json:"idle_windows_with_term_changes"`
	QuietCPUPressurePct float64      `json:"idle_quiet_windows_cpu_pressure_percent"`
	StormCPUPressurePct float64      `json:"idle_stormy_windows_cpu_pressure_percent"`

	Failover scaleFailover `json:"failover"`
	Rejoin   scaleRejoin   `json:"rejoin"`

	Targets map[string]bool `json:"targets_met"`
}

// idleWindow is one 10 s sample of the idle window.
type idleWindow struct {
	EndSeconds     float64   `json:"end_seconds"`
	Load1          float64   `json:"loadavg1"`
	CPUPressurePct float64   `json:"cpu_pressure_some_percent"`
	TermChanges    int64     `json:"term_changes"` // summed over brokers; -1 if a scrape failed
	CPUPercent     []float64 `json:"cpu_percent_by_broker"`
	seconds        float64
}

type scaleBrokerIdle struct {
	ID                  int32   `json:"id"`
	Groups              int     `json:"raft_groups"`
	LeadingStart        int     `json:"leading_start"`
	LeadingEnd          int     `json:"leading_end"`
	IdleCPUPercent      float64 `json:"idle_cpu_percent_of_one_core"`
	IdleCPUMaxWindowPct float64 `json:"idle_cpu_max_10s_window_percent"`
	QuietCPUPercent     float64 `json:"idle_cpu_percent_in_quiet_windows"` // CPU in the 10 s windows without a term change
	RSSMiBStart         float64 `json:"rss_mib_start"`
	RSSMiBEnd           float64 `json:"rss_mib_end"`
	GoroutinesStart     int     `json:"goroutines_start"`
	GoroutinesEnd       int     `json:"goroutines_end"`
	Threads             int     `json:"threads_end"`
	FDs                 int     `json:"open_fds_end"`
	TermSumDelta        uint64  `json:"term_sum_delta"`
	AppliedSumDelta     uint64  `json:"applied_index_sum_delta"`
	MetaTermDelta       uint64  `json:"metadata_term_delta"`
	LogBytesIdle        int64   `json:"log_bytes_written_while_idle"`
	// Log lines written while idle, by message (warn level and up), of
	// partition groups only.
	IdleElectionsLogged int `json:"idle_log_heartbeat_timeouts"` // "heartbeat timeout reached, starting election"
	IdleStepDownsLogged int `json:"idle_log_lease_step_downs"`   // "failed to contact quorum of nodes, stepping down"
	IdleSlowSyncsLogged int `json:"idle_log_slow_fdatasyncs"`    // "slow fdatasync" (> 1 s)
}

type scaleFailover struct {
	Victim               int32   `json:"victim"`
	VictimWasController  bool    `json:"victim_was_metadata_leader"`
	Partitions           int     `json:"partitions_led_by_victim"`
	Unfailed             int     `json:"partitions_without_new_leader"`
	P50Seconds           float64 `json:"p50_seconds"`
	P99Seconds           float64 `json:"p99_seconds"`
	MaxSeconds           float64 `json:"max_seconds"`
	MinSeconds           float64 `json:"min_seconds"`
	SurvivorMetadataFrom int32   `json:"metadata_polled_from"`
	// RaftLeadersSeconds: kill → the survivors' varve_raft_groups_leading
	// add up to every partition (elected and epoch start applied, before
	// the leaders are published to the metadata).
	RaftLeadersSeconds float64 `json:"survivors_ready_leaders_seconds"`
}

type scaleRejoin struct {
	ServingSeconds     float64 `json:"serving_seconds"`      // restart → it answers Metadata itself
	FirstLeaderSeconds float64 `json:"first_leader_seconds"` // → Metadata names it leader of a partition
	LeadersBackSeconds float64 `json:"leaders_back_seconds"` // → it leads every partition it is preferred for (-1: not within the cap)
	LeadersBack        int     `json:"leaders_back"`
	LeadersWanted      int     `json:"leaders_wanted"`
}

// scaleProc is one `varve serve` process.
type scaleProc struct {
	id        int32
	args      []string
	kafkaAddr string
	adminAddr string
	logPath   string
	cmd       *exec.Cmd
	exited    chan struct{}
	exitErr   error // cmd.Wait's answer, once exited is closed
}

func TestScale1000Partitions(t *testing.T) {
	if os.Getenv("VARVE_SCALE") != "1" {
		t.Skip("scale run, outside CI; run it with: " + scaleCommand)
	}
	idle := 10 * time.Minute
	if v := os.Getenv("VARVE_SCALE_IDLE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("VARVE_SCALE_IDLE=%q: want a duration such as 2m", v)
		}
		idle = d
	}
	res := &scaleResult{
		Date: time.Now().UTC().Format(time.RFC3339), GoVersion: runtime.Version(), CPUs: runtime.NumCPU(),
		Partitions: scalePartitions, RF: scaleRF, Brokers: scaleBrokers, Targets: map[string]bool{},
	}
	dir := t.TempDir()
	bin := buildVarve(t, dir)
	res.Commit = gitDescribe()
	procs := startScaleCluster(t, dir, bin)
	cl, err := kgo.NewClient(kgo.SeedBrokers(procs[0].kafkaAddr, procs[1].kafkaAddr, procs[2].kafkaAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	waitScaleServing(t, cl, procs)

	scaleCreate(t, cl, procs, res)
	scaleSettle(t, cl, procs, res)
	scaleIdle(t, procs, idle, res)
	if path := os.Getenv("VARVE_SCALE_PROFILE"); path != "" {
		scaleProfile(t, procs[0], path)
	}
	victim := scaleFailoverRun(t, cl, procs, res)
	scaleRejoinRun(t, cl, procs, victim, res)

	cpuOK := true
	for _, b := range res.PerBroker {
		cpuOK = cpuOK && b.IdleCPUPercent < targetIdleCPUPercent
	}
	res.Targets["zero_term_changes_while_idle"] = res.IdleTermChanges == 0
	res.Targets["idle_cpu_below_25pct_per_broker"] = cpuOK
	res.Targets["failover_p99_below_6s"] = res.Failover.Unfailed == 0 && res.Failover.P99Seconds < targetFailoverP99.Seconds()
	t.Log(res.table())
	if path := os.Getenv("VARVE_SCALE_OUT"); path != "" {
		js, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(path, append(js, '\n'), 0o644); err != nil {
			t.Errorf("write %s: %v", path, err)
		}
	}
	if res.IdleTermChanges != 0 {
		t.Errorf("term changes while idle: %d, want 0", res.IdleTermChanges)
	}
	for _, b := range res.PerBroker {
		if b.IdleCPUPercent >= targetIdleCPUPercent {
			t.Errorf("broker %d idle CPU %.1f%% of one core, want < %.0f%%", b.ID, b.IdleCPUPercent, targetIdleCPUPercent)
		}
	}
	if res.Failover.Unfailed > 0 {
		t.Errorf("%d partitions had no new leader %v after the kill", res.Failover.Unfailed, failoverCap)
	}
	if res.Failover.P99Seconds >= targetFailoverP99.Seconds() {
		t.Errorf("failover p99 %.2f s, want < %v", res.Failover.P99Seconds, targetFailoverP99)
	}
}

// buildVarve builds the binary from the module root (the test runs in
// integration/).
func buildVarve(t *testing.T, dir string) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not at %s: %v", root, err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	bin := filepath.Join(dir, "varve")
	start := time.Now()
	cmd := exec.Command(goBin, "build", "-o", bin, "./cmd/varve")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built %s in %v", bin, time.Since(start).Round(time.Millisecond))
	return bin
}

// gitDescribe names the module root's commit ("" outside a git tree).
func gitDescribe() string {
	out, err := exec.Command("git", "-C", "..", "describe", "--always", "--dirty").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// startScaleCluster starts three brokers with production timings; they
// are stopped (SIGTERM, then SIGKILL) when the test ends, and their logs
// printed if it failed.
func startScaleCluster(t *testing.T, dir, bin string) []*scaleProc {
	t.Helper()
	procs := make([]*scaleProc, scaleBrokers)
	logDir := dir
	if d := os.Getenv("VARVE_SCALE_LOGS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		logDir = d
	}
	var peers []string
	raftAddrs := make([]string, scaleBrokers)
	for i := range procs {
		raftAddrs[i] = freeAddr(t)
		peers = append(peers, fmt.Sprintf("%d@%s", i+1, raftAddrs[i]))
	}
	for i := range procs {
		p := &scaleProc{id: int32(i + 1), kafkaAddr: freeAddr(t), adminAddr: freeAddr(t),
			logPath: filepath.Join(logDir, fmt.Sprintf("broker-%d.log", i+1))}
		p.args = []string{"serve", "--id", strconv.Itoa(i + 1),
			"--data", filepath.Join(dir, fmt.Sprintf("data-%d", i+1)),
			"--kafka-addr", p.kafkaAddr, "--raft-addr", raftAddrs[i], "--admin-addr", p.adminAddr,
			"--peers", strings.Join(peers, ","), "--log-level", "warn"}
		procs[i] = p
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range procs {
				t.Logf("broker %d at the failure: %s", p.id, p.state())
			}
		}
		stopScaleProcs(t, procs)
		if t.Failed() {
			for _, p := range procs {
				t.Logf("broker %d log (%s), last 100 lines:\n%s", p.id, p.logPath, tailLines(p.logPath, 100))
			}
		}
	})
	for _, p := range procs {
		p.start(t, bin)
		t.Logf("broker %d: pid %d kafka %s admin %s log %s", p.id, p.cmd.Process.Pid, p.kafkaAddr, p.adminAddr, p.logPath)
	}
	return procs
}

func (p *scaleProc) start(t *testing.T, bin string) {
	t.Helper()
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		t.Fatalf("start broker %d: %v", p.id, err)
	}
	p.cmd, p.exited = cmd, make(chan struct{})
	exited := p.exited
	go func() {
		err := cmd.Wait()
		_ = f.Close()
		p.exitErr = err
		close(exited)
	}()
}

func (p *scaleProc) running() bool {
	if p.cmd == nil || p.exited == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// state describes the process for failure messages.
func (p *scaleProc) state() string {
	if p.running() {
		return fmt.Sprintf("pid %d running", p.cmd.Process.Pid)
	}
	if p.cmd == nil {
		return "never started"
	}
	return fmt.Sprintf("pid %d exited: %v", p.cmd.Process.Pid, p.exitErr)
}

// stopScaleProcs sends SIGTERM to every running broker and waits for the
// graceful shutdown (it checkpoints every partition), SIGKILL after 60 s.
func stopScaleProcs(t *testing.T, procs []*scaleProc) {
	for _, p := range procs {
		if p.running() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, p := range procs {
		if p.cmd == nil {
			continue
		}
		select {
		case <-p.exited:
		case <-time.After(60 * time.Second):
			t.Errorf("broker %d did not stop within 60 s of SIGTERM; killing it", p.id)
			_ = p.cmd.Process.Signal(syscall.SIGKILL)
			<-p.exited
		}
	}
}

// tailLines returns the last n lines of a file.
func tailLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// scaleMetadata asks broker id (or any broker for id < 0) for the scale
// topic's metadata.
func scaleMetadata(ctx context.Context, cl *kgo.Client, id int32) (*kmsg.MetadataResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(scaleTopic)
	req.Topics = append(req.Topics, rt)
	var resp kmsg.Response
	var err error
	if id < 0 {
		resp, err = cl.Request(ctx, req)
	} else {
		resp, err = cl.Broker(int(id)).Request(ctx, req)
	}
	if err != nil {
		return nil, err
	}
	return resp.(*kmsg.MetadataResponse), nil
}

// scaleLeaders maps partition → leader (-1 none) from a Metadata response.
func scaleLeaders(resp *kmsg.MetadataResponse) (leaders, preferred []int32, ok bool) {
	if len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 || len(resp.Topics[0].Partitions) != scalePartitions {
		return nil, nil, false
	}
	leaders, preferred = make([]int32, scalePartitions), make([]int32, scalePartitions)
	for _, p := range resp.Topics[0].Partitions {
		if p.Partition < 0 || int(p.Partition) >= scalePartitions {
			return nil, nil, false
		}
		leaders[p.Partition] = -1
		if p.ErrorCode == 0 {
			leaders[p.Partition] = p.Leader
		}
		preferred[p.Partition] = -1
		if len(p.Replicas) > 0 {
			preferred[p.Partition] = p.Replicas[0]
		}
	}
	return leaders, preferred, true
}

// waitScaleServing waits until every broker answers Metadata listing all
// three.
func waitScaleServing(t *testing.T, cl *kgo.Client, procs []*scaleProc) {
	t.Helper()
	start := time.Now()
	ctx := testContext(t, 2*time.Minute)
	eventually(t, 2*time.Minute, "three brokers serving", func() bool {
		for _, p := range procs {
			if !p.running() {
				t.Fatalf("broker %d exited at start: %s", p.id, p.state())
			}
		}
		resp, err := scaleMetadata(ctx, cl, -1)
		if err != nil || len(resp.Brokers) < scaleBrokers {
			return false
		}
		for _, p := range procs {
			if resp, err := scaleMetadata(ctx, cl, p.id); err != nil || len(resp.Brokers) < scaleBrokers {
				return false
			}
		}
		return true
	})
	t.Logf("3 brokers serving after %v", time.Since(start).Round(time.Millisecond))
}

// scaleCreate creates the topic and waits until every broker's Metadata
// names a leader for every partition. Polled every 250 ms alongside the
// CreateTopics call: when every broker has opened all its replicas
// (varve_raft_groups), when the groups have ready leaders
// (varve_raft_groups_leading adds up), when Metadata names them all.
func scaleCreate(t *testing.T, cl *kgo.Client, procs []*scaleProc, res *scaleResult) {
	t.Helper()
	adm := kadm.NewClient(cl)
	adm.SetTimeoutMillis(60_000)
	ctx := testContext(t, 10*time.Minute)
	start := time.Now()
	created := make(chan error, 1)
	go func() {
		resp, err := adm.CreateTopic(ctx, scalePartitions, scaleRF, nil, scaleTopic)
		if err == nil {
			err = resp.Err
		}
		res.CreateTopicsSeconds = time.Since(start).Seconds()
		created <- err
	}()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var createErr error
	done := false
	for (!done || res.AllLeadersSeconds == 0 || res.ReadyLeadersSeconds == 0) && time.Since(start) < 5*time.Minute {
		select {
		case createErr = <-created:
			done = true
			if createErr != nil {
				t.Fatalf("create topic: %v", createErr)
			}
		case <-tick.C:
		}
		if res.ReplicasOpenSeconds == 0 && allGroupsOpen(procs) {
			res.ReplicasOpenSeconds = time.Since(start).Seconds()
		}
		if res.ReadyLeadersSeconds == 0 && readyLeaders(procs) >= scalePartitions {
			res.ReadyLeadersSeconds = time.Since(start).Seconds()
		}
		if res.AllLeadersSeconds == 0 && allLeadersInMetadata(ctx, cl) {
			res.AllLeadersSeconds = time.Since(start).Seconds()
		}
	}
	if !done || res.AllLeadersSeconds == 0 {
		t.Fatalf("after 5 min: CreateTopics answered: %v; replicas opened %.1f s, ready leaders %.1f s, leaders in Metadata %.1f s (0: not yet)",
			done, res.ReplicasOpenSeconds, res.ReadyLeadersSeconds, res.AllLeadersSeconds)
	}
	t.Logf("CreateTopics answered after %.2f s; replicas opened on every broker after %.2f s; ready leaders for all after %.2f s; every leader in every broker's Metadata after %.2f s",
		res.CreateTopicsSeconds, res.ReplicasOpenSeconds, res.ReadyLeadersSeconds, res.AllLeadersSeconds)
}

// allGroupsOpen reports whether every broker runs a replica of every
// partition (RF = brokers here).
func allGroupsOpen(procs []*scaleProc) bool {
	for _, p := range procs {
		m, err := scrapeMetrics(p)
		if err != nil || int(m["varve_raft_groups"]) < scalePartitions {
			return false
		}
	}
	return true
}

// allLeadersInMetadata reports whether every broker's Metadata names a
// leader for every partition.
func allLeadersInMetadata(ctx context.Context, cl *kgo.Client) bool {
	for id := int32(1); id <= scaleBrokers; id++ {
		resp, err := scaleMetadata(ctx, cl, id)
		if err != nil {
			return false
		}
		leaders, _, ok := scaleLeaders(resp)
		if !ok || slices.Contains(leaders, -1) {
			return false
		}
	}
	return true
}

// scaleSettle waits (up to settleCap) until leadership balancing has put
// every leader on its preferred replica, so the idle window does not
// count the balancer's transfers.
func scaleSettle(t *testing.T, cl *kgo.Client, procs []*scaleProc, res *scaleResult) {
	t.Helper()
	start := time.Now()
	ctx := testContext(t, settleCap+time.Minute)
	off := -1
	for time.Since(start) < settleCap {
		if resp, err := scaleMetadata(ctx, cl, procs[0].id); err == nil {
			if leaders, preferred, ok := scaleLeaders(resp); ok {
				off = 0
				for i := range leaders {
					if leaders[i] != preferred[i] {
						off++
					}
				}
				if off == 0 {
					res.SettleBalanced = true
					break
				}
			}
		}
		time.Sleep(time.Second)
	}
	res.SettleSeconds = time.Since(start).Seconds()
	t.Logf("leadership balanced: %v after %.1f s (%d partitions led by a non-preferred replica)",
		res.SettleBalanced, res.SettleSeconds, off)
}

// procSample is one reading of a process's /proc files.
type procSample struct {
	at       time.Time
	ticks    uint64 // utime + stime
	rssKiB   uint64
	threads  int
	fds      int
	logBytes int64
}

func readProc(p *scaleProc) (procSample, error) {
	s := procSample{at: time.Now()}
	pid := p.cmd.Process.Pid
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name may hold spaces: fields start after its ')'.
	rest := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	if len(rest) < 13 {
		return s, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(rest))
	}
	utime, err1 := strconv.ParseUint(rest[11], 10, 64) // field 14
	stime, err2 := strconv.ParseUint(rest[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("/proc/%d/stat: %v %v", pid, err1, err2)
	}
	s.ticks = utime + stime
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			s.rssKiB, _ = strconv.ParseUint(fields[0], 10, 64)
		case "Threads":
			s.threads, _ = strconv.Atoi(fields[0])
		}
	}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		s.fds = len(ents)
	}
	if fi, err := os.Stat(p.logPath); err == nil {
		s.logBytes = fi.Size()
	}
	return s, nil
}

// scrapeMetrics reads the unlabelled samples of a broker's /metrics.
func scrapeMetrics(p *scaleProc) (map[string]float64, error) {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + p.adminAddr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 || strings.Contains(f[0], "{") {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			out[f[0]] = v
		}
	}
	return out, sc.Err()
}

// brokerSnapshot is what the idle window compares at its start and end.
type brokerSnapshot struct {
	proc    procSample
	metrics map[string]float64
}

func snapshotBrokers(t *testing.T, procs []*scaleProc) []brokerSnapshot {
	t.Helper()
	out := make([]brokerSnapshot, len(procs))
	for i, p := range procs {
		m, err := scrapeMetrics(p)
		if err != nil {
			t.Fatalf("broker %d (%s) metrics: %v", p.id, p.state(), err)
		}
		for _, name := range []string{"go_goroutines", "varve_raft_term_sum", "varve_raft_groups", "varve_metadata_term"} {
			if _, ok := m[name]; !ok {
				t.Fatalf("broker %d: /metrics has no %s", p.id, name)
			}
		}
		s, err := readProc(p)
		if err != nil {
			t.Fatalf("broker %d: %v", p.id, err)
		}
		out[i] = brokerSnapshot{proc: s, metrics: m}
	}
	return out
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.Join(strings.Fields(string(b))[:min(3, len(strings.Fields(string(b))))], " ")
}

// pressureTotal is the "some" stall time of a resource in microseconds
// since boot (-1 without PSI).
func pressureTotal(resource string) int64 {
	b, err := os.ReadFile("/proc/pressure/" + resource)
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "some ") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, "total="); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err == nil {
					return n
				}
			}
		}
	}
	return -1
}

// scaleIdle leaves the cluster alone for d, sampling CPU every 10 s.
func scaleIdle(t *testing.T, procs []*scaleProc, d time.Duration, res *scaleResult) {
	t.Helper()
	t.Logf("idle for %v (VARVE_SCALE_IDLE)", d)
	res.IdleLoadAvg[0] = loadAvg()
	cpu0, io0 := pressureTotal("cpu"), pressureTotal("io")
	first := snapshotBrokers(t, procs)
	prev := make([]procSample, len(procs))
	maxPct := make([]float64, len(procs))
	for i := range procs {
		prev[i] = first[i].proc
	}
	prevTerms, prevPSI := termSum(procs), cpu0
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	end := time.Now().Add(d)
	var loads []float64
	for time.Now().Before(end) {
		<-tick.C
		w := idleWindow{EndSeconds: time.Since(first[0].proc.at).Seconds(), TermChanges: -1}
		if f := strings.Fields(loadAvg()); len(f) > 0 {
			if v, err := strconv.ParseFloat(f[0], 64); err == nil {
				loads = append(loads, v)
				w.Load1 = v
			}
		}
		for i, p := range procs {
			if !p.running() {
				t.Fatalf("broker %d exited while idle: %s", p.id, p.state())
			}
			s, err := readProc(p)
			if err != nil {
				t.Fatalf("broker %d: %v", p.id, err)
			}
			pct := cpuPercent(prev[i], s)
			w.CPUPercent = append(w.CPUPercent, pct)
			maxPct[i] = max(maxPct[i], pct)
			w.seconds = s.at.Sub(prev[i].at).Seconds()
			prev[i] = s
		}
		if psi := pressureTotal("cpu"); psi >= 0 && prevPSI >= 0 && w.seconds > 0 {
			w.CPUPressurePct = float64(psi-prevPSI) / 1e6 / w.seconds * 100
			prevPSI = psi
		}
		terms := termSum(procs)
		if terms >= 0 && prevTerms >= 0 {
			w.TermChanges = terms - prevTerms
		}
		prevTerms = terms
		res.IdleWindows = append(res.IdleWindows, w)
	}
	last := snapshotBrokers(t, procs)
	res.IdleLoadAvg[1] = loadAvg()
	res.IdleSeconds = last[0].proc.at.Sub(first[0].proc.at).Seconds()
	if cpu0 >= 0 && io0 >= 0 {
		res.IdleCPUPressurePct = float64(pressureTotal("cpu")-cpu0) / 1e6 / res.IdleSeconds * 100
		res.IdleIOPressurePct = float64(pressureTotal("io")-io0) / 1e6 / res.IdleSeconds * 100
	}
	for _, l := range loads {
		res.IdleLoadAvgMean += l / float64(len(loads))
		res.IdleLoadAvgMax = max(res.IdleLoadAvgMax, l)
	}
	for i, p := range procs {
		a, b := first[i], last[i]
		br := scaleBrokerIdle{
			ID:                  p.id,
			Groups:              int(b.metrics["varve_raft_groups"]),
			LeadingStart:        int(a.metrics["varve_raft_groups_leading"]),
			LeadingEnd:          int(b.metrics["varve_raft_groups_leading"]),
			IdleCPUPercent:      cpuPercent(a.proc, b.proc),
			IdleCPUMaxWindowPct: maxPct[i],
			RSSMiBStart:         float64(a.proc.rssKiB) / 1024,
			RSSMiBEnd:           float64(b.proc.rssKiB) / 1024,
			GoroutinesStart:     int(a.metrics["go_goroutines"]),
			GoroutinesEnd:       int(b.metrics["go_goroutines"]),
			Threads:             b.proc.threads,
			FDs:                 b.proc.fds,
			TermSumDelta:        delta(a.metrics, b.metrics, "varve_raft_term_sum"),
			AppliedSumDelta:     delta(a.metrics, b.metrics, "varve_raft_applied_index_sum"),
			MetaTermDelta:       delta(a.metrics, b.metrics, "varve_metadata_term"),
			LogBytesIdle:        b.proc.logBytes - a.proc.logBytes,
		}
		br.IdleElectionsLogged, br.IdleStepDownsLogged, br.IdleSlowSyncsLogged = countIdleLog(p.logPath, a.proc.logBytes, b.proc.logBytes)
		var quietSecs float64
		for _, w := range res.IdleWindows {
			if w.TermChanges == 0 {
				br.QuietCPUPercent += w.CPUPercent[i] * w.seconds
				quietSecs += w.seconds
			}
		}
		if quietSecs > 0 {
			br.QuietCPUPercent /= quietSecs
		}
		res.IdleTermChanges += br.TermSumDelta
		res.IdleGroupTerms = max(res.IdleGroupTerms, br.TermSumDelta)
		res.IdleMetaTermChange += br.MetaTermDelta
		res.PerBroker = append(res.PerBroker, br)
	}
	res.summarizeWindows()
}

// countIdleLog counts the election-related lines of partition groups (not
// the metadata group's: its term is varve_metadata_term) that a broker
// logged between two offsets of its log.
func countIdleLog(path string, from, to int64) (elections, stepDowns, slowSyncs int) {
	f, err := os.Open(path)
	if err != nil || to <= from {
		return 0, 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(io.NewSectionReader(f, from, to-from))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, " topic=") && !strings.Contains(line, "slow fdatasync") {
			continue
		}
		switch {
		case strings.Contains(line, "heartbeat timeout reached, starting election"):
			elections++
		case strings.Contains(line, "failed to contact quorum of nodes, stepping down"):
			stepDowns++
		case strings.Contains(line, "slow fdatasync"):
			slowSyncs++
		}
	}
	return elections, stepDowns, slowSyncs
}

// termSum adds varve_raft_term_sum over brokers (-1 if one cannot be
// scraped).
func termSum(procs []*scaleProc) int64 {
	var n int64
	for _, p := range procs {
		m, err := scrapeMetrics(p)
		if err != nil {
			return -1
		}
		n += int64(m["varve_raft_term_sum"])
	}
	return n
}

// summarizeWindows splits the idle window's 10 s samples into quiet ones
// (no term change anywhere) and stormy ones.
func (r *scaleResult) summarizeWindows() {
	var qPSI, sPSI float64
	for _, w := range r.IdleWindows {
		switch {
		case w.TermChanges == 0:
			r.QuietWindows++
			qPSI += w.CPUPressurePct
		case w.TermChanges > 0:
			r.StormWindows++
			sPSI += w.CPUPressurePct
		}
	}
	if r.QuietWindows > 0 {
		r.QuietCPUPressurePct = qPSI / float64(r.QuietWindows)
	}
	if r.StormWindows > 0 {
		r.StormCPUPressurePct = sPSI / float64(r.StormWindows)
	}
}

func cpuPercent(a, b procSample) float64 {
	secs := b.at.Sub(a.at).Seconds()
	if secs <= 0 {
		return 0
	}
	return float64(b.ticks-a.ticks) / clockTicks / secs * 100
}

// delta is end - start of a gauge that should only grow (0 if it fell).
func delta(a, b map[string]float64, name string) uint64 {
	if d := b[name] - a[name]; d > 0 {
		return uint64(math.Round(d))
	}
	return 0
}

// scaleProfile saves a 30 s CPU profile of one (idle) broker.
func scaleProfile(t *testing.T, p *scaleProc, path string) {
	t.Helper()
	c := http.Client{Timeout: time.Minute}
	resp, err := c.Get("http://" + p.adminAddr + "/debug/pprof/profile?seconds=30")
	if err != nil {
		t.Fatalf("profile of broker %d (%s): %v", p.id, p.state(), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("profile: %v %s", err, resp.Status)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("30 s CPU profile of idle broker %d in %s (go tool pprof -top %s)", p.id, path, path)
}

// scaleFailoverRun kills the broker leading the most partitions and
// measures, per partition it led, the time until a survivor's Metadata
// names a new leader. It returns the victim's slot.
func scaleFailoverRun(t *testing.T, cl *kgo.Client, procs []*scaleProc, res *scaleResult) int {
	t.Helper()
	ctx := testContext(t, failoverCap+time.Minute)
	resp, err := scaleMetadata(ctx, cl, procs[0].id)
	if err != nil {
		t.Fatal(err)
	}
	leaders, _, ok := scaleLeaders(resp)
	if !ok {
		t.Fatal("metadata of the scale topic is incomplete before the kill")
	}
	counts := map[int32]int{}
	for _, l := range leaders {
		counts[l]++
	}
	vi := 0
	for i, p := range procs {
		if counts[p.id] > counts[procs[vi].id] {
			vi = i
		}
	}
	victim := procs[vi]
	survivor := procs[(vi+1)%len(procs)]
	fo := &res.Failover
	fo.Victim, fo.SurvivorMetadataFrom, fo.VictimWasController = victim.id, survivor.id, resp.ControllerID == victim.id
	pending := map[int32]bool{}
	for p, l := range leaders {
		if l == victim.id {
			pending[int32(p)] = true
		}
	}
	fo.Partitions = len(pending)
	t.Logf("leaders per broker %v; killing broker %d (pid %d, metadata leader: %v)", counts, victim.id, victim.cmd.Process.Pid, fo.VictimWasController)

	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	<-victim.exited
	var survivors []*scaleProc
	for _, p := range procs {
		if p != victim {
			survivors = append(survivors, p)
		}
	}
	var took []time.Duration
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for (len(pending) > 0 || fo.RaftLeadersSeconds == 0) && time.Since(killed) < failoverCap {
		<-tick.C
		if fo.RaftLeadersSeconds == 0 && readyLeaders(survivors) >= scalePartitions {
			fo.RaftLeadersSeconds = time.Since(killed).Seconds()
		}
		resp, err := scaleMetadata(ctx, cl, survivor.id)
		if err != nil {
			continue
		}
		now := time.Since(killed)
		leaders, _, ok := scaleLeaders(resp)
		if !ok {
			continue
		}
		for p := range pending {
			if l := leaders[p]; l >= 0 && l != victim.id {
				took = append(took, now)
				delete(pending, p)
			}
		}
	}
	fo.Unfailed = len(pending)
	for range pending {
		took = append(took, failoverCap)
	}
	slices.Sort(took)
	if len(took) > 0 {
		fo.P50Seconds = percentile(took, 0.50).Seconds()
		fo.P99Seconds = percentile(took, 0.99).Seconds()
		fo.MaxSeconds = took[len(took)-1].Seconds()
		fo.MinSeconds = took[0].Seconds()
	}
	t.Logf("failover of %d partitions: min %.2f s p50 %.2f s p99 %.2f s max %.2f s, %d without a new leader; survivors lead all %d (raft, ready) after %.2f s",
		fo.Partitions, fo.MinSeconds, fo.P50Seconds, fo.P99Seconds, fo.MaxSeconds, fo.Unfailed, scalePartitions, fo.RaftLeadersSeconds)
	return vi
}

// readyLeaders sums varve_raft_groups_leading over brokers (-1 if one
// cannot be scraped).
func readyLeaders(procs []*scaleProc) int {
	n := 0
	for _, p := range procs {
		m, err := scrapeMetrics(p)
		if err != nil {
			return -1
		}
		n += int(m["varve_raft_groups_leading"])
	}
	return n
}

// percentile is the nearest-rank percentile of sorted durations.
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// scaleRejoinRun restarts the victim with the same flags and measures
// until it serves and until leadership balancing has given it back every
// partition it is the preferred replica of (capped).
func scaleRejoinRun(t *testing.T, cl *kgo.Client, procs []*scaleProc, vi int, res *scaleResult) {
	t.Helper()
	victim := procs[vi]
	survivor := procs[(vi+1)%len(procs)]
	ctx := testContext(t, rejoinCap+time.Minute)
	bin := victim.cmd.Path
	start := time.Now()
	victim.start(t, bin)
	rj := &res.Rejoin
	rj.LeadersBackSeconds = -1
	for time.Since(start) < rejoinCap {
		if !victim.running() {
			t.Fatalf("broker %d exited after its restart: %s", victim.id, victim.state())
		}
		if rj.ServingSeconds == 0 {
			if _, err := scaleMetadata(ctx, cl, victim.id); err == nil {
				rj.ServingSeconds = time.Since(start).Seconds()
			}
		}
		if resp, err := scaleMetadata(ctx, cl, survivor.id); err == nil {
			if leaders, preferred, ok := scaleLeaders(resp); ok {
				rj.LeadersBack, rj.LeadersWanted = 0, 0
				for i := range leaders {
					if preferred[i] == victim.id {
						rj.LeadersWanted++
						if leaders[i] == victim.id {
							rj.LeadersBack++
						}
					}
				}
				if rj.LeadersBack > 0 && rj.FirstLeaderSeconds == 0 {
					rj.FirstLeaderSeconds = time.Since(start).Seconds()
				}
				if rj.ServingSeconds > 0 && rj.LeadersBack == rj.LeadersWanted {
					rj.LeadersBackSeconds = time.Since(start).Seconds()
					break
				}
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("broker %d restarted: serving after %.2f s, first leadership after %.2f s, %d of %d preferred leaderships back (after %.1f s)",
		victim.id, rj.ServingSeconds, rj.FirstLeaderSeconds, rj.LeadersBack, rj.LeadersWanted, rj.LeadersBackSeconds)
}

// table renders every number in one block.
func (r *scaleResult) table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "scale run: %d partitions RF %d on %d brokers, %d CPUs, %s, commit %s\n", r.Partitions, r.RF, r.Brokers, r.CPUs, r.GoVersion, r.Commit)
	fmt.Fprintf(&b, "  CreateTopics answered           %8.2f s\n", r.CreateTopicsSeconds)
	fmt.Fprintf(&b, "  every replica opened            %8.2f s (from CreateTopics sent)\n", r.ReplicasOpenSeconds)
	fmt.Fprintf(&b, "  every group has a ready leader  %8.2f s\n", r.ReadyLeadersSeconds)
	fmt.Fprintf(&b, "  all leaders in Metadata         %8.2f s\n", r.AllLeadersSeconds)
	fmt.Fprintf(&b, "  leadership balanced             %8.1f s later (balanced: %v)\n", r.SettleSeconds, r.SettleBalanced)
	fmt.Fprintf(&b, "  idle window                     %8.0f s, load average %s -> %s (1-min mean %.2f, max %.2f)\n",
		r.IdleSeconds, r.IdleLoadAvg[0], r.IdleLoadAvg[1], r.IdleLoadAvgMean, r.IdleLoadAvgMax)
	fmt.Fprintf(&b, "  machine pressure while idle     cpu some %.0f%%, io some %.0f%% of the window (/proc/pressure)\n",
		r.IdleCPUPressurePct, r.IdleIOPressurePct)
	fmt.Fprintf(&b, "  term changes while idle         %8d (sum of term_sum deltas; per group: %d; metadata group, summed: %d)\n",
		r.IdleTermChanges, r.IdleGroupTerms, r.IdleMetaTermChange)
	fmt.Fprintf(&b, "  10 s windows                    %d quiet (no term change; cpu pressure %.0f%%), %d with term changes (cpu pressure %.0f%%)\n",
		r.QuietWindows, r.QuietCPUPressurePct, r.StormWindows, r.StormCPUPressurePct)
	fmt.Fprintf(&b, "  %-6s %6s %9s %6s %7s %7s %9s %11s %7s %5s %6s %7s %6s %5s\n",
		"broker", "groups", "leading", "cpu%", "cpu%max", "cpu%q", "rss MiB", "goroutines", "threads", "fds", "terms", "hb-tmo", "lease", "slow")
	for _, p := range r.PerBroker {
		fmt.Fprintf(&b, "  %-6d %6d %4d->%-4d %6.1f %7.1f %7.1f %4.0f->%-4.0f %5d->%-5d %7d %5d %6d %7d %6d %5d\n",
			p.ID, p.Groups, p.LeadingStart, p.LeadingEnd, p.IdleCPUPercent, p.IdleCPUMaxWindowPct, p.QuietCPUPercent,
			p.RSSMiBStart, p.RSSMiBEnd, p.GoroutinesStart, p.GoroutinesEnd, p.Threads, p.FDs, p.TermSumDelta,
			p.IdleElectionsLogged, p.IdleStepDownsLogged, p.IdleSlowSyncsLogged)
	}
	fmt.Fprintf(&b, "    (cpu%%q: CPU in the quiet windows; hb-tmo, lease, slow: log lines while idle: partition groups'\n")
	fmt.Fprintf(&b, "     heartbeat timeouts and leader-lease step-downs, fdatasyncs > 1 s)\n")
	f := r.Failover
	fmt.Fprintf(&b, "  failover: killed broker %d (metadata leader: %v), %d partitions; polled Metadata on broker %d every 100 ms\n",
		f.Victim, f.VictimWasController, f.Partitions, f.SurvivorMetadataFrom)
	fmt.Fprintf(&b, "    min %.2f s  p50 %.2f s  p99 %.2f s  max %.2f s  without new leader %d; survivors ready-lead all after %.2f s\n",
		f.MinSeconds, f.P50Seconds, f.P99Seconds, f.MaxSeconds, f.Unfailed, f.RaftLeadersSeconds)
	j := r.Rejoin
	fmt.Fprintf(&b, "  rejoin: serving %.2f s, first leadership %.2f s, preferred leaderships back %d/%d at %.1f s\n",
		j.ServingSeconds, j.FirstLeaderSeconds, j.LeadersBack, j.LeadersWanted, j.LeadersBackSeconds)
	keys := make([]string, 0, len(r.Targets))
	for k := range r.Targets {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  target %-34s met: %v\n", k, r.Targets[k])
	}
	return b.String()
}
