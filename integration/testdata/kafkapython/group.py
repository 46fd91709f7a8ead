#!/usr/bin/env python3
"""Drives Varve with kafka-python (Debian's python3-kafka, 2.0.2).

integration/kafkapython_test.go runs it in two modes:

  produce: KafkaProducer (acks=all) writes COUNT records, key "k<i % 97>",
           value "<PREFIX>-<i>", and waits for every acknowledgement.
  consume: KafkaConsumer in GROUP (auto-commit every 200 ms, earliest when
           nothing is committed) polls until every partition it is assigned
           has been read up to its end offset (with --shared: and it has
           once shared the topic with another member), prints each record as
           "key<TAB>value<TAB>partition<TAB>offset", then closes, which
           commits the consumed positions and leaves the group.

The broker version is auto-detected (kafka-python probes ApiVersions and
infers 2.4 from Produce v8): the consumer then sends Metadata 1, Fetch 4,
ListOffsets 1, FindCoordinator 0, JoinGroup 2, SyncGroup/Heartbeat/LeaveGroup
1, OffsetCommit 2, OffsetFetch 1; the producer Produce 7.

Records go to stdout, logs to stderr. Exit status 0 on success, 2 when the
deadline passes first.
"""

import argparse
import logging
import sys
import time

from kafka import KafkaConsumer, KafkaProducer


def produce(args):
    producer = KafkaProducer(
        bootstrap_servers=args.bootstrap.split(","),
        client_id="varve-kafka-python-producer",
        acks="all",
        linger_ms=5,
        retries=5,
        request_timeout_ms=30000,
    )
    futures = [
        producer.send(args.topic, key=("k%d" % (i % 97)).encode(), value=("%s-%d" % (args.prefix, i)).encode())
        for i in range(args.count)
    ]
    producer.flush(timeout=args.timeout)
    for f in futures:
        f.get(timeout=args.timeout)  # raises the broker's error, if any
    producer.close(timeout=10)
    return 0


def caught_up(consumer, assigned):
    """Whether every assigned partition has been consumed up to its end."""
    ends = consumer.end_offsets(list(assigned))
    return all(consumer.position(tp) >= ends[tp] for tp in assigned)


def consume(args):
    consumer = KafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap.split(","),
        client_id="varve-kafka-python-consumer",
        group_id=args.group,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        auto_commit_interval_ms=200,
        session_timeout_ms=10000,
        heartbeat_interval_ms=1000,
        request_timeout_ms=30000,
        fetch_max_wait_ms=200,
    )
    deadline = time.monotonic() + args.timeout
    read = 0
    shared = not args.shared
    while True:
        batch = consumer.poll(timeout_ms=200)
        for tp, records in batch.items():
            for r in records:
                key = r.key.decode() if r.key is not None else ""
                sys.stdout.write("%s\t%s\t%d\t%d\n" % (key, r.value.decode(), tp.partition, r.offset))
                read += 1
        assigned = consumer.assignment()
        if not shared and 0 < len(assigned) < len(consumer.partitions_for_topic(args.topic) or ()):
            logging.info("sharing the topic: assigned %s", sorted(tp.partition for tp in assigned))
            shared = True
        if shared and not batch and assigned and caught_up(consumer, assigned):
            break
        if time.monotonic() > deadline:
            logging.error("deadline passed: read %d records, assigned %s, shared %s",
                          read, sorted(tp.partition for tp in assigned), shared)
            sys.stdout.flush()
            consumer.close(autocommit=False)
            return 2
    sys.stdout.flush()
    logging.info("caught up on %s after %d records; closing", sorted(tp.partition for tp in assigned), read)
    consumer.close()  # commits the consumed positions synchronously, then leaves the group
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["produce", "consume"])
    ap.add_argument("--bootstrap", required=True, help="comma-separated host:port list")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", help="consumer group (consume)")
    ap.add_argument("--count", type=int, default=0, help="records to produce (produce)")
    ap.add_argument("--prefix", default="v", help="value prefix (produce)")
    ap.add_argument("--shared", action="store_true",
                    help="(consume) do not stop before holding some but not all of the partitions once, "
                         "that is before another member of the group shared the topic")
    ap.add_argument("--timeout", type=float, default=60, help="seconds before giving up")
    ap.add_argument("--debug", action="store_true", help="kafka-python's debug log on stderr")
    args = ap.parse_args()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if args.mode == "produce":
        return produce(args)
    if not args.group:
        ap.error("consume needs --group")
    return consume(args)


if __name__ == "__main__":
    sys.exit(main())
