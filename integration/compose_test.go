package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/varvelog/varve/integration/checker"
)

// The compose tests (tier T3 of TESTPLAN.md) run the repository's
// docker-compose.yml: three brokers in containers built FROM scratch by
// docker/build.sh, reached from this (host) process on their published
// EXTERNAL listeners, and fault them with docker itself: docker kill,
// docker-compose stop (SIGTERM), docker pause and docker network
// disconnect. They need a Docker engine and docker-compose, so they run
// only when asked:
const composeCommand = "VARVE_COMPOSE=1 go test -count=1 -run TestCompose -v ./integration/"

// composeProject names the compose project, so the containers, network and
// volumes of a test run never mix with a developer's `docker-compose up`.
const composeProject = "varvetest"

// composeNetwork is the project's network (docker-compose names it
// <project>_default), which docker network disconnect cuts.
const composeNetwork = composeProject + "_default"

// composeStopGrace is docker-compose.yml's stop_grace_period in seconds,
// for docker stop -t: how long a SIGTERMed broker may take to stop before
// docker SIGKILLs it.
const composeStopGrace = "35"

// composeBrokers are the broker ids of docker-compose.yml (service
// varve-<id>).
var composeBrokers = []int32{1, 2, 3}

// composeExternal is each broker's published Kafka address, by broker id
// (docker-compose.yml: EXTERNAL://localhost:1909N, ports "1909N:1909N").
var composeExternal = map[int32]string{1: "localhost:19091", 2: "localhost:19092", 3: "localhost:19093"}

// composeSeeds is every broker's published address.
func composeSeeds() []string {
	return []string{composeExternal[1], composeExternal[2], composeExternal[3]}
}

// composeCluster drives docker-compose for one test (or subtest: see
// forTest). Its methods fail t on errors.
type composeCluster struct {
	t       *testing.T
	root    string   // repository root
	compose []string // the compose command and its project flags
}

// TestCompose builds the image once, starts the three-broker compose
// cluster once, and runs the T3 rows of TESTPLAN.md against it as
// subtests, each on its own topic (6 partitions, RF 3) under a continuous
// idempotent load recorded by the checker (integration/checker):
//
//   - RollingRestart (row 17; issue 7's "a rolling restart under load loses
//     nothing, each partition leaderless < 5 s"): SIGTERM each broker in
//     turn, start it again, wait until it is healthy and leads again.
//   - LeaderKill (row 1): docker kill the leader of a partition, produce and
//     consume through the others while it is down, start it again; two
//     rounds.
//   - LeaderPause (row 6): docker pause the leader past the election
//     timeout, then unpause it.
//   - LeaderIsolation (row 4): docker network disconnect the leader while
//     a client sharing its network namespace keeps writing to it; the old
//     leader must acknowledge nothing, then rejoin.
//   - ReplicasAgree (row 8 at T3): stop every broker and read every
//     replica's segment files offline (docker cp): identical batches,
//     valid CRCs, and the contents each subtest's history expects.
//
// Each subtest heals the cluster first (unpause, reconnect, start, wait
// healthy), so one failure does not cascade into the next. Set
// VARVE_COMPOSE_PREBUILT=1 to reuse an existing varve:dev image instead of
// running docker/build.sh (handy while iterating on the tests), and
// VARVE_COMPOSE_LOGS=<dir> to keep every broker's whole log there.
func TestCompose(t *testing.T) {
	cc := newComposeCluster(t)
	if os.Getenv("VARVE_COMPOSE_PREBUILT") == "1" {
		t.Log("VARVE_COMPOSE_PREBUILT=1: using the existing varve:dev image")
	} else {
		cc.build()
	}
	start := time.Now()
	cc.up()
	cc.waitHealthy(90*time.Second, composeBrokers...)
	t.Logf("three brokers healthy in %v", time.Since(start).Round(time.Millisecond))

	// The histories of the subtests that ran, for the offline replica
	// check at the end.
	var runs []*composeRun
	record := func(r *composeRun) {
		if r != nil {
			runs = append(runs, r)
		}
	}
	t.Run("RollingRestart", func(t *testing.T) { record(testComposeRollingRestart(t, cc.forTest(t))) })
	t.Run("LeaderKill", func(t *testing.T) { record(testComposeLeaderKill(t, cc.forTest(t))) })
	t.Run("LeaderPause", func(t *testing.T) { record(testComposeLeaderPause(t, cc.forTest(t))) })
	t.Run("LeaderIsolation", func(t *testing.T) { record(testComposeLeaderIsolation(t, cc.forTest(t))) })
	t.Run("ReplicasAgree", func(t *testing.T) { testComposeReplicasAgree(t, cc.forTest(t), runs) })
}

// newComposeCluster skips unless VARVE_COMPOSE=1, and checks that a Docker
// engine answers and a compose command exists: without them the test fails
// in CI (CI set) and skips elsewhere. It brings down what an interrupted
// earlier run left behind and registers the final `down -v`.
func newComposeCluster(t *testing.T) *composeCluster {
	t.Helper()
	if os.Getenv("VARVE_COMPOSE") != "1" {
		t.Skip("the compose test needs a Docker engine and docker-compose; run it with: " + composeCommand)
	}
	unavailable := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		if os.Getenv("CI") != "" {
			t.Fatal(msg + " (CI is set and VARVE_COMPOSE=1: the compose test must run)")
		}
		t.Skip(msg)
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		unavailable("no Docker engine answers (docker info: %v: %s)", err, strings.TrimSpace(string(out)))
	}
	var compose []string
	if _, err := exec.LookPath("docker-compose"); err == nil {
		compose = []string{"docker-compose"}
	} else if exec.Command("docker", "compose", "version").Run() == nil {
		compose = []string{"docker", "compose"}
	} else {
		unavailable("neither docker-compose nor the docker compose plugin is installed")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "docker-compose.yml")); err != nil {
		t.Fatalf("docker-compose.yml not at the module root %s: %v", root, err)
	}
	cc := &composeCluster{
		t:       t,
		root:    root,
		compose: append(compose, "-p", composeProject, "-f", filepath.Join(root, "docker-compose.yml")),
	}
	cc.composeRun(2*time.Minute, "down", "-v", "--remove-orphans", "-t", "5")
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := cc.composeRun(time.Minute, "logs", "--no-color", "--tail", "100")
			t.Logf("docker-compose logs --tail 100:\n%s", out)
		}
		if dir := os.Getenv("VARVE_COMPOSE_LOGS"); dir != "" {
			for _, id := range composeBrokers {
				c, err := cc.containerID(id)
				if err != nil {
					continue
				}
				out, _ := cc.dockerRun(time.Minute, "logs", "--timestamps", c)
				name := filepath.Join(dir, fmt.Sprintf("varve-%d.log", id))
				if err := os.WriteFile(name, []byte(out), 0o644); err != nil {
					t.Errorf("VARVE_COMPOSE_LOGS: %v", err)
				}
			}
			t.Logf("VARVE_COMPOSE_LOGS: the brokers' logs are in %s", dir)
		}
		start := time.Now()
		// A container left paused or disconnected by a failed subtest
		// still goes: down removes it and the network.
		for _, id := range composeBrokers {
			if c, err := cc.containerID(id); err == nil {
				_, _ = cc.dockerRun(30*time.Second, "unpause", c)
			}
		}
		if out, err := cc.composeRun(2*time.Minute, "down", "-v", "--remove-orphans", "-t", "10"); err != nil {
			t.Errorf("docker-compose down -v: %v\n%s", err, out)
		}
		t.Logf("docker-compose down -v in %v", time.Since(start).Round(time.Millisecond))
	})
	return cc
}

// forTest is cc for subtest t: failures fail t, and when t fails the
// brokers' logs since it started are printed.
func (cc *composeCluster) forTest(t *testing.T) *composeCluster {
	c := *cc
	c.t = t
	since := time.Now().Add(-time.Second).UTC().Format(time.RFC3339)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := c.composeRun(time.Minute, "logs", "--no-color", "--timestamps", "--tail", "300")
			t.Logf("docker-compose logs (last 300 lines per broker; the subtest started at %s):\n%s", since, out)
		}
	})
	return &c
}

// build runs docker/build.sh: the static binary and the varve:dev image.
func (cc *composeCluster) build() {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(cc.root, "docker", "build.sh"))
	cmd.Dir = cc.root
	// The go that runs this test builds the binary, whatever PATH says.
	cmd.Env = append(os.Environ(), "PATH="+filepath.Join(runtime.GOROOT(), "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		cc.t.Fatalf("docker/build.sh: %v\n%s", err, out)
	}
	cc.t.Logf("%s in %v", strings.TrimSpace(string(out)), time.Since(start).Round(time.Millisecond))
}

func (cc *composeCluster) up() {
	if out, err := cc.composeRun(2*time.Minute, "up", "-d"); err != nil {
		cc.t.Fatalf("docker-compose up -d: %v\n%s", err, out)
	}
}

// container is the id of broker id's container (service varve-<id>).
func (cc *composeCluster) container(id int32) string {
	cc.t.Helper()
	c, err := cc.containerID(id)
	if err != nil {
		cc.t.Fatal(err)
	}
	return c
}

// containerID finds the container by the labels docker-compose puts on
// it: plain docker answers in milliseconds, where every docker-compose 1.x
// invocation costs seconds of interpreter start-up.
func (cc *composeCluster) containerID(id int32) (string, error) {
	out, err := cc.dockerRun(30*time.Second, "ps", "-aq", "--no-trunc",
		"--filter", "label=com.docker.compose.project="+composeProject,
		"--filter", fmt.Sprintf("label=com.docker.compose.service=varve-%d", id))
	name := strings.TrimSpace(out)
	if err != nil || name == "" || strings.ContainsAny(name, " \n") {
		return "", fmt.Errorf("container of varve-%d: %q %v", id, out, err)
	}
	return name, nil
}

// composeState is what docker inspect says about a broker's container.
type composeState struct {
	status    string // running, exited, paused, ...
	health    string // healthy, starting, unhealthy ("" without a check)
	networks  string // the networks it is connected to
	exitCode  int
	pid       int // its init process (the broker) on this host, while running
	startedAt string
}

func (cc *composeCluster) state(id int32) composeState {
	cc.t.Helper()
	c := cc.container(id)
	out, err := cc.dockerRun(30*time.Second, "inspect", "-f",
		"{{.State.Status}}|{{if .State.Health}}{{.State.Health.Status}}{{end}}|{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}|{{.State.ExitCode}}|{{.State.Pid}}|{{.State.StartedAt}}", c)
	if err != nil {
		cc.t.Fatalf("docker inspect varve-%d: %v\n%s", id, err, out)
	}
	f := strings.Split(strings.TrimSpace(out), "|")
	if len(f) != 6 {
		cc.t.Fatalf("docker inspect varve-%d: %q", id, out)
	}
	var st composeState
	st.status, st.health, st.networks, st.startedAt = f[0], f[1], strings.TrimSpace(f[2]), f[5]
	fmt.Sscan(f[3], &st.exitCode)
	fmt.Sscan(f[4], &st.pid)
	return st
}

// waitHealthy waits until each broker's container reports healthy (its
// health check runs `varve health --ready`), failing early if one exits.
func (cc *composeCluster) waitHealthy(within time.Duration, ids ...int32) {
	cc.t.Helper()
	deadline := time.Now().Add(within)
	for _, id := range ids {
		for {
			st := cc.state(id)
			if st.status == "running" && st.health == "healthy" {
				break
			}
			if st.status != "running" {
				cc.t.Fatalf("broker %d's container is %s (exit code %d), not running", id, st.status, st.exitCode)
			}
			if time.Now().After(deadline) {
				cc.t.Fatalf("broker %d not healthy within %v: %s %s", id, within, st.status, st.health)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
}

// heal undoes whatever a fault (or a failed subtest) left: unpauses,
// reconnects to the compose network (under the service name the peers
// dial), starts stopped containers, and waits until all are healthy.
func (cc *composeCluster) heal() {
	cc.t.Helper()
	for _, id := range composeBrokers {
		st := cc.state(id)
		c := cc.container(id)
		if st.status == "paused" {
			cc.docker(30*time.Second, "unpause", c)
		}
		if !strings.Contains(st.networks, composeNetwork) {
			cc.connect(id)
		}
		if st.status == "exited" || st.status == "created" {
			cc.docker(60*time.Second, "start", c)
		}
	}
	cc.waitHealthy(90*time.Second, composeBrokers...)
}

// connect reconnects broker id's container to the compose network with its
// service name as alias: the peers dial varve-<id>, and docker network
// connect alone would register only the container's name.
func (cc *composeCluster) connect(id int32) {
	cc.docker(30*time.Second, "network", "connect", "--alias", fmt.Sprintf("varve-%d", id), composeNetwork, cc.container(id))
}

// logs is broker id's container output since the RFC 3339 time since.
func (cc *composeCluster) logs(id int32, since string) string {
	cc.t.Helper()
	out, err := cc.dockerRun(time.Minute, "logs", "--since", since, cc.container(id))
	if err != nil {
		cc.t.Fatalf("docker logs varve-%d: %v\n%s", id, err, out)
	}
	return out
}

// docker runs a docker command that must succeed.
func (cc *composeCluster) docker(timeout time.Duration, args ...string) {
	cc.t.Helper()
	if out, err := cc.dockerRun(timeout, args...); err != nil {
		cc.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// composeMust runs a docker-compose command that must succeed.
func (cc *composeCluster) composeMust(timeout time.Duration, args ...string) {
	cc.t.Helper()
	if out, err := cc.composeRun(timeout, args...); err != nil {
		cc.t.Fatalf("docker-compose %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (cc *composeCluster) dockerRun(timeout time.Duration, args ...string) (string, error) {
	return composeExec(timeout, cc.root, "docker", args...)
}

func (cc *composeCluster) composeRun(timeout time.Duration, args ...string) (string, error) {
	return composeExec(timeout, cc.root, cc.compose[0], append(cc.compose[1:len(cc.compose):len(cc.compose)], args...)...)
}

func composeExec(timeout time.Duration, dir, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// composeClient is a franz-go client of the compose cluster, closed with
// the test.
func composeClient(t testing.TB, seeds []string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// composeLeaders lists the partitions of topic each broker leads, from a
// Metadata request sent now (kadm's Metadata answers from the client's
// cache, up to 5 s old).
func composeLeaders(ctx context.Context, cl *kgo.Client, topic string) (map[int32][]int32, error) {
	resp, err := composeMetadata(ctx, cl, topic)
	if err != nil {
		return nil, err
	}
	return composeLeadersIn(resp, topic)
}

// composeMetadata sends a Metadata request for topic now.
func composeMetadata(ctx context.Context, cl *kgo.Client, topic string) (*kmsg.MetadataResponse, error) {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	return req.RequestWith(ctx, cl)
}

// composeLeadersIn is composeLeaders for a Metadata response in hand.
func composeLeadersIn(resp *kmsg.MetadataResponse, topic string) (map[int32][]int32, error) {
	if len(resp.Topics) != 1 || resp.Topics[0].Topic == nil || *resp.Topics[0].Topic != topic {
		return nil, fmt.Errorf("metadata of %s: %d topics", topic, len(resp.Topics))
	}
	if err := kerr.ErrorForCode(resp.Topics[0].ErrorCode); err != nil {
		return nil, fmt.Errorf("topic %s: %w", topic, err)
	}
	out := map[int32][]int32{}
	for _, p := range resp.Topics[0].Partitions {
		if p.ErrorCode == 0 && p.Leader >= 0 {
			out[p.Leader] = append(out[p.Leader], p.Partition)
		}
	}
	return out, nil
}

// composeMostLeader is the broker leading the most partitions of topic,
// and those partitions.
func composeMostLeader(t testing.TB, cl *kgo.Client, topic string) (int32, []int32) {
	t.Helper()
	leads, err := composeLeaders(testContext(t, 10*time.Second), cl, topic)
	if err != nil {
		t.Fatal(err)
	}
	victim := composeBrokers[0]
	for _, id := range composeBrokers {
		if len(leads[id]) > len(leads[victim]) {
			victim = id
		}
	}
	t.Logf("partitions led per broker: %v", leads)
	return victim, leads[victim]
}

// composeWaitLeaders waits until every partition of topic has a leader.
func composeWaitLeaders(t testing.TB, cl *kgo.Client, topic string, partitions int, within time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		leads, err := composeLeaders(testContext(t, 10*time.Second), cl, topic)
		n := 0
		for _, ps := range leads {
			n += len(ps)
		}
		if err == nil && n == partitions {
			t.Logf("all %d partitions of %s led %v after it was created", partitions, topic, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > within {
			t.Fatalf("%d of %d partitions of %s have a leader after %v: %v %v", n, partitions, topic, within, leads, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// composeWaitLeads waits until broker id leads a partition of topic again:
// the leader balancer hands a restarted broker its preferred partitions
// once it has caught up, so reading through it then reads its replicas.
func composeWaitLeads(t testing.TB, cl *kgo.Client, topic string, id int32, within time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		leads, err := composeLeaders(testContext(t, 10*time.Second), cl, topic)
		if err == nil && len(leads[id]) > 0 {
			t.Logf("broker %d leads again %v after it was healthy: %v", id, time.Since(start).Round(time.Millisecond), leads)
			return
		}
		if time.Since(start) > within {
			t.Fatalf("broker %d leads no partition of %s %v after its restart: %v %v", id, topic, within, leads, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// composeRun is what one subtest leaves for the final offline replica
// check: its topic and its history.
type composeRun struct {
	name       string
	topic      string
	partitions int32
	h          *checker.History
	absent     []string // values that must be in no drain and no replica
}
