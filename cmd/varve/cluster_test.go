package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/varvelog/varve/integration"
)

func testClusterInfo(t *testing.T, c *integration.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := c.Admin(t).Metadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	topics, partitions := 0, 0
	for _, td := range m.Topics {
		if !td.IsInternal {
			topics++
		}
		partitions += len(td.Partitions)
	}
	if topics == 0 {
		t.Fatal("no topics: run after the tests that create some")
	}
	want := fmt.Sprintf("cluster id\t%s\nmetadata leader\t1\nbrokers\t1\ntopics\t%d\npartitions\t%d\nunder-replicated\t0\noffline\t0\n\n"+
		"BROKER\tADDRESS\tRACK\tLEADERS\tREPLICAS\tSTATUS\n1\t%s\t-\t%d\t%d\tup\n", m.Cluster, topics, partitions, c.Addr(), partitions, partitions)
	if out := mustRun(t, "", "cluster", "info", "--brokers", c.Addr()); out != want {
		t.Errorf("cluster info:\n%s\nwant\n%s", out, want)
	}
	var s clusterSummary
	if err := json.Unmarshal([]byte(mustRun(t, "", "cluster", "info", "-o", "json", "--brokers", c.Addr())), &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Brokers) != 1 || s.Brokers[0].ID != 1 || s.Brokers[0].Address != c.Addr() || s.Brokers[0].Leaders != partitions || !s.Brokers[0].Reachable ||
		s.Topics != topics || s.ClusterID != m.Cluster || s.MetadataLeader != 1 || len(s.ProblemPartition) != 0 {
		t.Errorf("cluster info -o json: %+v", s)
	}
}

// clusterInfoJSON runs cluster info -o json against addr.
func clusterInfoJSON(t *testing.T, addr string) clusterSummary {
	t.Helper()
	var s clusterSummary
	out := mustRun(t, "", "cluster", "info", "-o", "json", "--brokers", addr)
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("cluster info -o json: %v\n%s", err, out)
	}
	return s
}

// Three brokers: cluster info lists each with the partitions it leads
// (as the Metadata answer says) and the metadata leader; once a broker is
// killed, it is unreachable, the partitions it followed that move on
// without it are under-replicated, and those it alone held are offline.
func TestClusterInfoThreeBrokers(t *testing.T) {
	c := integration.NewCluster(t, integration.Brokers(3))
	addr := c.BrokerAddr(0)
	mustRun(t, "", "topic", "create", "rf3", "-p", "3", "-r", "3", "--brokers", addr)
	mustRun(t, "", "topic", "create", "rf1", "-p", "3", "-r", "1", "--brokers", addr)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	adm := c.Admin(t)
	var s clusterSummary
	var m kadm.Metadata
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		if m, err = adm.Metadata(ctx, "rf3", "rf1"); err != nil {
			t.Fatal(err)
		}
		s = clusterInfoJSON(t, addr)
		if s.MetadataLeader == m.Controller && s.MetadataLeader > 0 && len(s.ProblemPartition) == 0 && leadersMatch(s, m) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster info %+v never matched the metadata %+v", s, m)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(s.Brokers) != 3 || s.Topics != 2 || s.Partitions != 6 || s.Offline != 0 || s.UnderReplicated != 0 {
		t.Fatalf("a healthy cluster: %+v", s)
	}
	for i, b := range s.Brokers {
		if b.ID != int32(i+1) || b.Address != c.BrokerAddr(c.Index(b.ID)) {
			t.Errorf("broker %d: %+v, want id %d at %s", i, b, i+1, c.BrokerAddr(c.Index(b.ID)))
		}
	}

	// rf1's partitions on broker 3 have no other replica: with broker 3
	// dead they are offline, though the metadata still names it leader.
	var wantOffline []string
	for _, pd := range m.Topics["rf1"].Partitions.Sorted() {
		if slices.Equal(pd.Replicas, []int32{3}) {
			wantOffline = append(wantOffline, fmt.Sprintf("rf1/%d offline (leader unreachable)", pd.Partition))
		}
	}
	if len(wantOffline) == 0 {
		t.Fatalf("no partition of rf1 on broker 3: %+v", m.Topics["rf1"].Partitions)
	}
	victim := c.Index(3)
	c.Kill(victim)
	// Write to every partition of rf3 so the logs move on without broker 3.
	for p := range 3 {
		mustRun(t, "x\n", "produce", "-t", "rf3", "-p", strconv.Itoa(p), "--brokers", addr)
	}
	wantProblems := append(wantOffline, "rf3/0 under-replicated", "rf3/1 under-replicated", "rf3/2 under-replicated")
	slices.Sort(wantProblems)
	want := strings.Join(wantProblems, ", ")
	textWant := []string{
		`\nbrokers\t3 \(1 unreachable\)\n`,
		`\nunder-replicated\t3\noffline\t` + strconv.Itoa(len(wantOffline)) + `\n`,
		`\n3\t` + regexp.QuoteMeta(c.BrokerAddr(victim)) + `\t-\t\d+\t\d+\tunreachable: connection refused\n`,
		`\nTOPIC\tPARTITION\tLEADER\tREPLICAS\tISR\tSTATUS\n`,
		`\nrf3\t0\t[12]\t[123],[123],[123]\t[12],[12]\tunder-replicated\n`,
		`\nrf1\t\d\t3\t3\t3\toffline \(leader unreachable\)\n`,
	}
	// The JSON and the table are asked in turn until both show it (a
	// leadership change can reset a partition's ISR for a moment).
	var got []string
	var out string
	deadline = time.Now().Add(60 * time.Second)
	for {
		s = clusterInfoJSON(t, addr)
		got = nil
		ok := s.UnderReplicated == 3 && s.Offline == len(wantOffline)
		for _, pi := range s.ProblemPartition {
			line := fmt.Sprintf("%s/%d %s", pi.Topic, pi.Partition, pi.Status)
			if pi.Reason != "" {
				line += " (" + pi.Reason + ")"
			}
			got = append(got, line)
			if pi.Topic == "rf3" {
				ok = ok && len(pi.ISR) == 2 && !slices.Contains(pi.ISR, 3) && len(pi.Replicas) == 3 && pi.Leader != 3
			}
		}
		slices.Sort(got)
		ok = ok && strings.Join(got, ", ") == want
		if b := s.Brokers[2]; b.ID != 3 || b.Reachable || b.Error != "connection refused" || !s.Brokers[0].Reachable || !s.Brokers[1].Reachable {
			ok = false
		}
		if ok {
			out = mustRun(t, "", "cluster", "info", "--brokers", addr)
			for _, re := range textWant {
				ok = ok && regexp.MustCompile(re).MatchString(out)
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with broker 3 down, cluster info: %+v\nproblems %q, want %q\ntable:\n%s\nwant it to match %q", s, got, want, out, textWant)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("with broker 3 killed:\n%s", out)
}

// leadersMatch: each broker's leader count is what the metadata says.
func leadersMatch(s clusterSummary, m kadm.Metadata) bool {
	led := map[int32]int{}
	for _, td := range m.Topics {
		for _, pd := range td.Partitions {
			led[pd.Leader]++
		}
	}
	for _, b := range s.Brokers {
		if b.Leaders < led[b.ID] { // cluster info also counts __consumer_offsets, if any
			return false
		}
	}
	return len(led) > 0
}

// summarizeCluster on a hand-built answer: every kind of problem, the
// internal topic counted in partitions but not in topics.
func TestSummarizeCluster(t *testing.T) {
	rack := "r1"
	m := kadm.Metadata{Cluster: "c", Controller: 2,
		Brokers: kadm.BrokerDetails{{NodeID: 2, Host: "h2", Port: 9092}, {NodeID: 1, Host: "h1", Port: 9092, Rack: &rack}, {NodeID: 3, Host: "h3", Port: 9092}},
		Topics: kadm.TopicDetails{
			"a": {Topic: "a", Partitions: kadm.PartitionDetails{
				0: {Partition: 0, Leader: 1, Replicas: []int32{1, 2, 3}, ISR: []int32{1, 2, 3}},
				1: {Partition: 1, Leader: 2, Replicas: []int32{2, 3, 1}, ISR: []int32{2, 1}},
				2: {Partition: 2, Leader: -1, Replicas: []int32{3, 1, 2}, ISR: []int32{}},
			}},
			"b":                  {Topic: "b", Partitions: kadm.PartitionDetails{0: {Partition: 0, Leader: 3, Replicas: []int32{3}, ISR: []int32{3}}}},
			"__consumer_offsets": {Topic: "__consumer_offsets", IsInternal: true, Partitions: kadm.PartitionDetails{0: {Partition: 0, Leader: 1, Replicas: []int32{1}, ISR: []int32{1}}}},
		}}
	s := summarizeCluster(m, map[int32]error{3: errors.New("unable to dial: dial tcp h3:9092: connect: connection refused")})
	got, _ := json.Marshal(s)
	want := `{"cluster_id":"c","metadata_leader":2,"topics":2,"partitions":5,"under_replicated":1,"offline":2,"brokers":[` +
		`{"id":1,"address":"h1:9092","rack":"r1","leader_partitions":2,"replicas":4,"reachable":true},` +
		`{"id":2,"address":"h2:9092","rack":null,"leader_partitions":1,"replicas":3,"reachable":true},` +
		`{"id":3,"address":"h3:9092","rack":null,"leader_partitions":1,"replicas":4,"reachable":false,"error":"connection refused"}],` +
		`"problem_partitions":[{"topic":"a","partition":1,"leader":2,"replicas":[2,3,1],"isr":[2,1],"status":"under-replicated"},` +
		`{"topic":"a","partition":2,"leader":-1,"replicas":[3,1,2],"isr":[],"status":"offline","reason":"no leader"},` +
		`{"topic":"b","partition":0,"leader":3,"replicas":[3],"isr":[3],"status":"offline","reason":"leader unreachable"}]}`
	if string(got) != want {
		t.Errorf("summary\n%s\nwant\n%s", got, want)
	}
}
