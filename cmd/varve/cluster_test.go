package main

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

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
		"BROKER\tADDRESS\tRACK\tLEADERS\tREPLICAS\n1\t%s\t-\t%d\t%d\n", m.Cluster, topics, partitions, c.Addr(), partitions, partitions)
	if out := mustRun(t, "", "cluster", "info", "--brokers", c.Addr()); out != want {
		t.Errorf("cluster info:\n%s\nwant\n%s", out, want)
	}
	var s clusterSummary
	if err := json.Unmarshal([]byte(mustRun(t, "", "cluster", "info", "-o", "json", "--brokers", c.Addr())), &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Brokers) != 1 || s.Brokers[0].ID != 1 || s.Brokers[0].Address != c.Addr() || s.Brokers[0].Leaders != partitions ||
		s.Topics != topics || s.ClusterID != m.Cluster || s.MetadataLeader != 1 || len(s.ProblemPartition) != 0 {
		t.Errorf("cluster info -o json: %+v", s)
	}
}
