package main

import (
	"flag"
	"io"
)

// serve and health parse their own flag sets (not toolFlags: they take no
// --brokers); their --help has the same shape as the tools' own.

const serveExamples = `  varve serve                                        # one broker: Kafka on 127.0.0.1:9092, data in ./varve-data
  varve serve --auto-create-topics --data /var/lib/varve
  varve serve --id 2 --peers 1@h1:9093,2@h2:9093,3@h3:9093 --raft-addr 0.0.0.0:9093 \
    --kafka-addr 0.0.0.0:9092 --advertise h2:9092     # broker 2 of three
  VARVE_LOG_LEVEL=debug varve serve --config varve.yaml
  varve serve --print-config-reference               # every flag, env var and YAML key (Markdown)
`

const healthExamples = `  varve health                                       # exit 0 if 127.0.0.1:9644/healthz answers 200
  varve health --ready --admin-addr varve-1:9644     # /readyz: the broker answers Kafka requests
`

// printCommandHelp prints --help for a flag set that is not a tool's:
// usage line, examples and flags, in the tools' format, to w (stdout).
func printCommandHelp(w io.Writer, fs *flag.FlagSet, synopsis, examples string) {
	(&toolFlags{FlagSet: fs, synopsis: synopsis, examples: examples}).printHelp(w)
}
