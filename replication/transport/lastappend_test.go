package transport

import (
	"fmt"
	"testing"
	"time"
)

// TestLastAppend: a group that has heard nothing reports the zero time; once
// the leader replicates, every follower reports an append at or after the
// write that went out, and so does it again for a later write (the time
// moves with replicated data).
func TestLastAppend(t *testing.T) {
	c := newTestCluster(t, 3, 1, nil, nil)
	g := c.groups[0]
	if at := c.nodes[0].mux.Group("not-opened").LastAppend(); !at.IsZero() {
		t.Fatalf("LastAppend of a group that received nothing = %v", at)
	}
	c.waitLeaders(10 * time.Second)
	l, err := c.leader(g)
	if err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		before := time.Now()
		c.apply(g, []byte(fmt.Sprintf("cmd-%d", round)))
		eventually(t, 5*time.Second, func() error {
			for _, n := range c.nodes {
				if n == l {
					continue
				}
				if at := n.mux.Group(g).LastAppend(); at.Before(before) {
					return fmt.Errorf("round %d: follower %s LastAppend %v, before the write at %v", round, n.id, at, before)
				}
			}
			return nil
		})
	}
}
