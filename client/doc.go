// Package client is a thin layer over franz-go's kgo and kadm for the
// varve command-line tools and for tests: one Config for every tool,
// New that builds a client and proves a broker answers before anything
// else happens, a probe of every broker, Kafka-compatible key
// partitioning, offset specifications ("beginning", "end", "-1h",
// "@1700000000000", "@2026-11-28T09:00:00Z", ...) resolved to concrete
// offsets, points in time for offset resets, the kcat-style and JSON
// renderings of records, and the bench workloads.
//
// It reads no flags, environment or files (only cmd/ does); the errors it
// returns fit on one line so a CLI can print them as they are.
package client
