package integration

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testComposeRollingRestart is row 17 of TESTPLAN.md at T3 and issue 7's
// promise: SIGTERM each broker in turn (docker stop -t 35, which SIGKILLs
// after docker-compose.yml's stop_grace_period), start it again, wait
// until it is healthy and leads again (the leader balancer hands a
// broker its preferred partitions only once it has caught up on them),
// while the idempotent producer writes to every partition and the
// watcher asks every broker who leads. It asserts:
//
//   - each broker stopped gracefully (exit code 0, not SIGKILLed) after
//     handing off the leadership it held (its "leadership handoff
//     finished" log line: nothing failed or skipped, at least the
//     partitions of the topic it led moved);
//   - every write acknowledged, each exactly once at its acknowledged
//     offset, and the checker's (a)-(f) and (h) over the whole run;
//   - each partition without a live leader for less than 5 s at a time,
//     seen from the client side two ways: the watcher (no broker answers
//     naming itself leader) and the producer (the longest wait between two
//     acknowledgements of the partition).
//
// "Healthy" matters for the second bound: hashicorp/raft backs a leader's
// replication to an unreachable follower off exponentially (up to 10.24 s)
// and the backoff outlives the outage, so a restarted broker can serve
// while its replicas still wait for their leaders' next append. Stopping
// the next broker then left partitions that needed the restarted one's
// acknowledgement 8-17 s without an acknowledged write, though Metadata
// named a live leader throughout; /readyz now waits for the leaders to
// replicate to the broker again (broker/ready_replicas.go).
func testComposeRollingRestart(t *testing.T, cc *composeCluster) *composeRun {
	cc.heal()
	const topic = "t3-rolling"
	l := startComposeLoad(t, topic)
	l.waitAcked(50, 60*time.Second)
	l.h.Note("rolling restart: docker stop -t %s (SIGTERM) then start, brokers %v in turn, each healthy and leading again before the next", composeStopGrace, composeBrokers)

	var leaderless, ackStalls []time.Duration // per partition and restart
	var lines []string
	begin := time.Now()
	for _, id := range composeBrokers {
		leads, err := composeLeaders(testContext(t, 10*time.Second), l.admin, topic)
		if err != nil {
			t.Fatal(err)
		}
		from := time.Now()
		since := from.Add(-time.Second).UTC().Format(time.RFC3339Nano)
		// docker stop sends the container's stop signal (SIGTERM) and
		// SIGKILLs after -t seconds, as docker-compose stop does after
		// stop_grace_period.
		cc.docker(90*time.Second, "stop", "-t", composeStopGrace, cc.container(id))
		stopTook := time.Since(from)
		st := cc.state(id)
		if st.status != "exited" || st.exitCode != 0 {
			t.Errorf("broker %d after SIGTERM: %s with exit code %d (137: SIGKILLed at the grace period)", id, st.status, st.exitCode)
		}
		sum := composeHandoffSummary(t, cc.logs(id, since), id)
		if sum["failed"] != "0" || sum["skipped"] != "0" {
			t.Errorf("broker %d's handoff did not move everything: %v", id, sum)
		}
		if moved, _ := strconv.Atoi(sum["moved"]); moved < len(leads[id]) {
			t.Errorf("broker %d's handoff moved %d partitions; it led %d of %s alone: %v", id, moved, len(leads[id]), topic, sum)
		}
		// Every partition keeps taking writes while the broker is down.
		l.waitAcked(20, 60*time.Second)
		downFor := time.Now()
		cc.docker(60*time.Second, "start", cc.container(id))
		cc.waitHealthy(90*time.Second, id)
		healthy := time.Since(downFor)
		composeWaitLeads(t, l.admin, topic, id, 90*time.Second)
		l.waitAcked(20, 60*time.Second)
		to := time.Now()

		gaps := composeMaxGaps(l.watch.leaderless(from, to))
		stalls := l.ackGaps(from, to)
		leaderless = append(leaderless, composeValues(gaps)...)
		ackStalls = append(ackStalls, composeValues(stalls)...)
		line := fmt.Sprintf("broker %d (led %v): stopped in %v (handoff: moved %s failed %s skipped %s published %s metadata %s in %s), started and healthy in %v; "+
			"leaderless per partition %v, longest ack wait per partition %v; %d watcher samples",
			id, leads[id], stopTook.Round(time.Millisecond), sum["moved"], sum["failed"], sum["skipped"], sum["published"], sum["metadata"], sum["duration"],
			healthy.Round(time.Millisecond), composeRound(gaps), composeRound(stalls), l.watch.sampleCount(from, to))
		t.Log(line)
		lines = append(lines, line)
		l.h.Note("%s", line)
	}
	took := time.Since(begin)
	r := l.finish(composeExternal[1])
	t.Logf("rolling restart of %d brokers in %v; leaderless time per partition and restart: %s; longest ack wait per partition and restart: %s; %v",
		len(composeBrokers), took.Round(time.Millisecond), composeDist(leaderless), composeDist(ackStalls), l.h.Counts())
	for _, d := range leaderless {
		if d >= composeLeaderlessMax {
			t.Errorf("a partition had no live leader for %v (bound %v): %s", d.Round(time.Millisecond), composeLeaderlessMax, strings.Join(lines, "\n"))
			break
		}
	}
	for _, d := range ackStalls {
		if d >= composeLeaderlessMax {
			t.Errorf("a partition took no acknowledgement for %v (bound %v): %s", d.Round(time.Millisecond), composeLeaderlessMax, strings.Join(lines, "\n"))
			break
		}
	}
	_ = r
	return &composeRun{name: "RollingRestart", topic: topic, partitions: composePartitions, h: l.h}
}

// composeLogAttr matches one key=value of a slog text line.
var composeLogAttr = regexp.MustCompile(`(\w+)=("(?:[^"\\]|\\.)*"|\S+)`)

// composeHandoffSummary finds the "leadership handoff finished" line in a
// broker's logs and returns its attributes. The broker logs it once per
// graceful shutdown, before its Raft groups stop.
func composeHandoffSummary(t *testing.T, logs string, id int32) map[string]string {
	t.Helper()
	var found []map[string]string
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, "leadership handoff finished") {
			continue
		}
		attrs := map[string]string{}
		for _, m := range composeLogAttr.FindAllStringSubmatch(line, -1) {
			attrs[m[1]] = strings.Trim(m[2], `"`)
		}
		found = append(found, attrs)
	}
	if len(found) != 1 {
		t.Fatalf("broker %d logged %d handoff summaries during its stop, want 1:\n%s", id, len(found), logs)
	}
	return found[0]
}

// composeRound rounds each duration to milliseconds, for logs.
func composeRound(m map[int32]time.Duration) map[int32]time.Duration {
	out := map[int32]time.Duration{}
	for p, d := range m {
		out[p] = d.Round(time.Millisecond)
	}
	return out
}
