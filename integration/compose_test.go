package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The compose test runs the repository's docker-compose.yml: three brokers
// in containers built FROM scratch by docker/build.sh, reached from this
// (host) process on their published EXTERNAL listeners. It needs a Docker
// engine and docker-compose, so it runs only when asked:
const composeCommand = "VARVE_COMPOSE=1 go test -count=1 -run TestCompose -v ./integration/"

// composeProject names the compose project, so the containers, network and
// volumes of a test run never mix with a developer's `docker-compose up`.
const composeProject = "varvetest"

// composeExternal is each broker's published Kafka address, by broker id
// (docker-compose.yml: EXTERNAL://localhost:1909N, ports "1909N:1909N").
var composeExternal = map[int32]string{1: "localhost:19091", 2: "localhost:19092", 3: "localhost:19093"}

// composeCluster drives docker-compose for one test.
type composeCluster struct {
	t       *testing.T
	root    string   // repository root
	compose []string // the compose command and its project flags
}

// TestComposeKillOneBroker builds the image, starts the three-broker compose
// cluster, creates a topic (6 partitions, RF 3), produces 2,000 records,
// kills the container leading the most partitions, produces 2,000 more
// while it is down, and checks through a surviving broker that every
// acknowledged record sits exactly once at its acknowledged offset. Then it
// starts the container again, waits until it is healthy and leads again,
// and checks the same through it.
func TestComposeKillOneBroker(t *testing.T) {
	cc := newComposeCluster(t)
	cc.build()
	start := time.Now()
	cc.up()
	cc.waitHealthy(90*time.Second, 1, 2, 3)
	t.Logf("three brokers healthy in %v", time.Since(start).Round(time.Millisecond))

	const topic, partitions, perPhase = "compose", 6, 2000
	seeds := []string{composeExternal[1], composeExternal[2], composeExternal[3]}
	admCl := composeClient(t, seeds)
	adm := kadm.NewClient(admCl)
	ctx := testContext(t, 30*time.Second)
	resp, err := adm.CreateTopic(ctx, partitions, 3, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic %s (6 partitions, RF 3): %v", topic, err)
	}

	// CreateTopics answers once the metadata has the topic; its partitions'
	// Raft groups elect leaders moments later (LEADER_NOT_AVAILABLE until
	// then), and a producer that saw no leader waits out kgo's 5 s
	// metadata min age.
	composeWaitLeaders(t, admCl, topic, partitions, 30*time.Second)

	prod := composeClient(t, seeds, kgo.DefaultProduceTopic(topic), kgo.RecordDeliveryTimeout(90*time.Second))
	acked := map[string]composeAck{}
	phase := time.Now()
	composeProduce(t, prod, acked, "before", perPhase)
	t.Logf("produced %d records with all brokers up in %v", perPhase, time.Since(phase).Round(time.Millisecond))

	victim, moved := composeMostLeader(t, admCl, topic)
	victimContainer := cc.container(victim)
	phase = time.Now()
	cc.docker(30*time.Second, "kill", victimContainer)
	t.Logf("killed broker %d (container %.12s)", victim, victimContainer)
	composeProduce(t, prod, acked, "during", perPhase)
	t.Logf("produced %d records with broker %d down in %v (leader elections included)", perPhase, victim, time.Since(phase).Round(time.Millisecond))
	// The keys spread over every partition: those the dead broker led took
	// writes under new leaders.
	for _, p := range moved {
		if !composeWritten(acked, "during", p) {
			t.Fatalf("no record acknowledged in partition %d (led by the killed broker) while it was down", p)
		}
	}

	survivor := int32(1)
	if victim == 1 {
		survivor = 2
	}
	composeCheck(t, []string{composeExternal[survivor]}, topic, acked)
	t.Logf("all %d acknowledged records read back through broker %d", len(acked), survivor)

	phase = time.Now()
	cc.docker(30*time.Second, "start", victimContainer)
	cc.waitHealthy(90*time.Second, victim)
	composeWaitLeads(t, admCl, topic, victim, 60*time.Second)
	t.Logf("broker %d restarted, healthy and leading again in %v", victim, time.Since(phase).Round(time.Millisecond))
	composeCheck(t, []string{composeExternal[victim]}, topic, acked)
	t.Logf("all %d acknowledged records read back through the restarted broker %d", len(acked), victim)
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
		start := time.Now()
		if out, err := cc.composeRun(2*time.Minute, "down", "-v", "-t", "10"); err != nil {
			t.Errorf("docker-compose down -v: %v\n%s", err, out)
		}
		t.Logf("docker-compose down -v in %v", time.Since(start).Round(time.Millisecond))
	})
	return cc
}

// build runs docker/build.sh: the static binary and the varve:dev image.
func (cc *composeCluster) build() {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
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
	out, err := cc.composeRun(30*time.Second, "ps", "-q", fmt.Sprintf("varve-%d", id))
	name := strings.TrimSpace(out)
	if err != nil || name == "" || strings.ContainsAny(name, " \n") {
		cc.t.Fatalf("container of varve-%d: %q %v", id, out, err)
	}
	return name
}

// waitHealthy waits until each broker's container reports healthy (its
// health check runs `varve health --ready`), failing early if one exits.
func (cc *composeCluster) waitHealthy(within time.Duration, ids ...int32) {
	cc.t.Helper()
	deadline := time.Now().Add(within)
	for _, id := range ids {
		c := cc.container(id)
		for {
			out, err := cc.dockerRun(30*time.Second, "inspect", "-f", "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}", c)
			state := strings.TrimSpace(out)
			if err == nil && state == "running healthy" {
				break
			}
			if err == nil && !strings.HasPrefix(state, "running") {
				cc.t.Fatalf("broker %d's container is %q, not running", id, state)
			}
			if time.Now().After(deadline) {
				cc.t.Fatalf("broker %d not healthy within %v: %q %v", id, within, state, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
}

// docker runs a docker command that must succeed.
func (cc *composeCluster) docker(timeout time.Duration, args ...string) {
	cc.t.Helper()
	if out, err := cc.dockerRun(timeout, args...); err != nil {
		cc.t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
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
func composeClient(t *testing.T, seeds []string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// composeAck is where the cluster acknowledged a record.
type composeAck struct {
	partition int32
	offset    int64
}

// composeProduce produces n records with distinct values (acks=all,
// idempotent, retried by the client) and records where each was
// acknowledged. Every record must be acknowledged.
func composeProduce(t *testing.T, cl *kgo.Client, acked map[string]composeAck, phase string, n int) {
	t.Helper()
	ctx := testContext(t, 2*time.Minute)
	var mu sync.Mutex
	var errs []error
	for i := range n {
		v := fmt.Sprintf("%s-%05d", phase, i)
		cl.Produce(ctx, &kgo.Record{Key: []byte(v), Value: []byte(v)}, func(r *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", r.Value, err))
				return
			}
			acked[string(r.Value)] = composeAck{r.Partition, r.Offset}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(errs) > 0 {
		t.Fatalf("%d of %d records not acknowledged; first: %v", len(errs), n, errs[0])
	}
}

// composeWritten reports whether a record of phase was acknowledged in
// partition p.
func composeWritten(acked map[string]composeAck, phase string, p int32) bool {
	for v, at := range acked {
		if at.partition == p && strings.HasPrefix(v, phase+"-") {
			return true
		}
	}
	return false
}

// composeLeaders lists the partitions of topic each broker leads, from a
// Metadata request sent now (kadm's Metadata answers from the client's
// cache, up to 5 s old).
func composeLeaders(ctx context.Context, cl *kgo.Client, topic string) (map[int32][]int32, error) {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, err
	}
	if len(resp.Topics) != 1 {
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
func composeMostLeader(t *testing.T, cl *kgo.Client, topic string) (int32, []int32) {
	t.Helper()
	leads, err := composeLeaders(testContext(t, 10*time.Second), cl, topic)
	if err != nil {
		t.Fatal(err)
	}
	victim := int32(2)
	for id := int32(1); id <= 3; id++ {
		if len(leads[id]) > len(leads[victim]) {
			victim = id
		}
	}
	t.Logf("partitions led per broker: %v", leads)
	return victim, leads[victim]
}

// composeWaitLeaders waits until every partition of topic has a leader.
func composeWaitLeaders(t *testing.T, cl *kgo.Client, topic string, partitions int, within time.Duration) {
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
func composeWaitLeads(t *testing.T, cl *kgo.Client, topic string, id int32, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		leads, err := composeLeaders(testContext(t, 10*time.Second), cl, topic)
		if err == nil && len(leads[id]) > 0 {
			t.Logf("partitions led per broker: %v", leads)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("broker %d leads no partition of %s %v after its restart: %v %v", id, topic, within, leads, err)
		}
		time.Sleep(time.Second)
	}
}

// composeCheck reads topic from the start through the brokers in seeds and
// checks that each acknowledged record is at its acknowledged partition and
// offset, that no value appears twice, and that the log holds nothing else.
func composeCheck(t *testing.T, seeds []string, topic string, acked map[string]composeAck) {
	t.Helper()
	ctx := testContext(t, 90*time.Second)
	cl := composeClient(t, seeds, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200*time.Millisecond))
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("end offsets through %v: %v", seeds, err)
	}
	want := map[int32]int64{}
	total := int64(0)
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			t.Fatalf("end offset of %s/%d through %v: %v", o.Topic, o.Partition, seeds, o.Err)
		}
		want[o.Partition] = o.Offset
		total += o.Offset
	})
	if total != int64(len(acked)) {
		t.Fatalf("the partitions end at %v (%d records), %d were acknowledged", want, total, len(acked))
	}
	got := map[string]composeAck{}
	read := int64(0)
	for read < total {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records through %v: %v", read, total, seeds, ctx.Err())
		}
		fs.EachError(func(tp string, p int32, err error) {
			t.Logf("fetch %s/%d through %v: %v (retried)", tp, p, seeds, err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= want[r.Partition] {
				return
			}
			read++
			at := composeAck{r.Partition, r.Offset}
			if prev, dup := got[string(r.Value)]; dup {
				t.Fatalf("value %s at %d/%d and at %d/%d", r.Value, prev.partition, prev.offset, at.partition, at.offset)
			}
			got[string(r.Value)] = at
		})
	}
	for v, at := range acked {
		if g, ok := got[v]; !ok {
			t.Fatalf("acknowledged %s at %d/%d: missing", v, at.partition, at.offset)
		} else if g != at {
			t.Fatalf("acknowledged %s at %d/%d: read at %d/%d", v, at.partition, at.offset, g.partition, g.offset)
		}
	}
}
