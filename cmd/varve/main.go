// Command varve is the Varve broker and its command-line tools in one
// static binary.
//
//	varve serve [flags]    run a broker
//	varve health [flags]   check a broker's admin listener (/healthz, /readyz)
//
// Every flag of serve has an environment variable (VARVE_ plus the flag
// name in upper case with dashes as underscores) and a key in the optional
// YAML file named by --config (the flag name). A flag given on the command
// line wins over the environment, which wins over the file.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = runServe(os.Args[2:])
	case "health":
		err = runHealth(os.Args[2:])
	case "produce", "consume", "topic", "group", "cluster":
		os.Exit(runTool(os.Args[1], os.Args[2:]))
	case "help", "-h", "--help":
		usage()
		return
	default:
		fmt.Fprintf(os.Stderr, "varve: unknown command %q\n\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "varve %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `varve: a Kafka-compatible log broker

Commands:
  serve    run a broker (varve serve --help for its flags)
  health   exit 0 if a broker's /healthz (or /readyz with --ready) answers 200
  produce  write lines of stdin to a topic (varve produce --help)
  consume  print a topic's records, kcat-style or as JSON (varve consume --help)
  topic    create, list, describe, delete, alter-config
  group    list, describe (lag), delete, reset-offsets
  cluster  info: brokers, controller, partition health
`)
}
