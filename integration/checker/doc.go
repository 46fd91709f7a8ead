// Package checker records what clients did to a Varve cluster during a
// fault test and checks the history against the promises in TESTPLAN.md
// (checks (a)-(h), and row 8's replica agreement).
//
// A test builds one History, runs its workload through it and, after the
// faults, heals the cluster and feeds it the final state:
//
//	h := checker.New()
//	p := h.NewProducer(cl, true) // cl: the test's kgo client
//	go p.Run(ctx, topic, 5*time.Millisecond, 16)
//	c, _ := h.NewConsumer("c1", "group", kgo.SeedBrokers(...), kgo.ConsumeTopics(topic))
//	go c.Run(ctx, 200*time.Millisecond)
//	... faults, heal ...
//	h.WaitLag(ctx, adm, "group", []string{topic}, 30*time.Second) // (h)
//	h.Drain(ctx, seed, []string{topic}, 30*time.Second)           // final read from offset 0
//	... stop the brokers ...
//	h.ReadReplicas(topic, p, []checker.Replica{{Name, FS, Dir}, ...})
//	h.Check().Require(t)
//
// Every value written is globally unique ("p<producer>-<seq>"), so every
// observation of a value (an acknowledgement, a poll, the drain, a record in
// a replica's segment files) can be traced to the one write that made it.
// Each operation has an invocation and a completion, ordered by a history
// clock: a produce completes ok (with its partition and offset), failed (a
// definite refusal: the broker rejected the batch for what it is, so no
// attempt can have written it) or indeterminate (anything else: a timeout,
// a cut connection, a retriable error after retries ran out; the write may
// or may not be in the log). Offset commits are recorded the same way;
// every failed commit counts as indeterminate, because the client retries
// commits and an earlier attempt may have landed.
//
// The recording methods are exported (Invoke, Complete, AddPoll, ...), so a
// test that drives another client, or a unit test, can build a history by
// hand. The Producer and Consumer types are the franz-go (kgo) front end.
//
// Replicas are read offline, straight from their segment files through a
// vfs.FS, opened read-only: nothing is recovered, truncated or rebuilt, so a
// torn tail or a bad CRC the broker's own recovery would hide is reported.
package checker
