// Command varve is the Varve broker and its command-line tools in one
// static binary.
//
//	varve serve [flags]    run a broker
//	varve health [flags]   check a broker's admin listener (/healthz, /readyz)
//	varve [--brokers HOST:PORT,...] produce|consume|topic|group|cluster|bench ...
//
// Every flag of serve has an environment variable (VARVE_ plus the flag
// name in upper case with dashes as underscores) and a key in the optional
// YAML file named by --config (the flag name). A flag given on the command
// line wins over the environment, which wins over the file.
//
// The client tools find the cluster from --brokers, given after the tool
// (varve topic list --brokers h:9092) or before it (varve --brokers h:9092
// topic list; the tool's own wins), else from VARVE_BROKERS, else
// 127.0.0.1:9092.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/varvelog/varve/client"
)

func main() {
	cmd, err := parseCommandLine(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(os.Stdout)
			return
		}
		fmt.Fprintf(os.Stderr, "varve: %v\n", err)
		os.Exit(2)
	}
	switch cmd.name {
	case "serve":
		if len(cmd.args) == 1 && cmd.args[0] == "--print-config-reference" {
			fmt.Print(configReference())
			return
		}
		err = runServe(cmd.args)
	case "health":
		err = runHealth(cmd.args)
	default:
		os.Exit(runTool(cmd.name, cmd.args, cmd.brokers))
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "varve %s: %v\n", cmd.name, err)
		if _, ok := errors.AsType[usageError](err); ok {
			os.Exit(2) // a mistake on the command line, as for the tools
		}
		os.Exit(1)
	}
}

// commandLine is varve's command line after its global flags.
type commandLine struct {
	name    string   // serve, health, or a client tool
	args    []string // what follows the name
	brokers string   // the global --brokers; "" when not given
}

// parseCommandLine reads the global flags (--brokers, --help) up to the
// command's name. It returns flag.ErrHelp for help, and otherwise a
// one-line error for an unknown flag or command.
func parseCommandLine(args []string) (commandLine, error) {
	fs := flag.NewFlagSet("varve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	brokers := fs.String("brokers", "", "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return commandLine{}, err
		}
		return commandLine{}, fmt.Errorf("%w (see varve --help)", err)
	}
	rest := fs.Args()
	if len(rest) == 0 {
		return commandLine{}, errors.New("missing command (see varve --help)")
	}
	cmd := commandLine{name: rest[0], args: rest[1:], brokers: *brokers}
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "brokers" })
	if given && strings.TrimSpace(*brokers) == "" {
		return commandLine{}, errors.New("--brokers is empty")
	}
	switch {
	case cmd.name == "help":
		return commandLine{}, flag.ErrHelp
	case cmd.name == "serve" || cmd.name == "health":
		if given {
			return commandLine{}, fmt.Errorf("--brokers is for the client tools, not %s", cmd.name)
		}
	case tools[cmd.name] == nil:
		return commandLine{}, fmt.Errorf("unknown command %q (see varve --help)", cmd.name)
	}
	return cmd, nil
}

func usage(w io.Writer) {
	fmt.Fprint(w, `varve: a Kafka-compatible log broker

Usage: varve [--brokers HOST:PORT,...] COMMAND [flags]

Commands:
  serve    run a broker (varve serve --help for its flags; --print-config-reference
           prints every flag, environment variable and YAML key as a Markdown table)
  health   exit 0 if a broker's /healthz (or /readyz with --ready) answers 200
  produce  write lines of stdin to a topic, keyed as the Java client (varve produce --help)
  consume  print a topic's records: values, key and value, kcat-style or JSON (varve consume --help)
  topic    create, list, describe, delete, alter-config
  group    list, describe (members, assignment, lag), delete, reset-offsets
  cluster  info: brokers (reachable or not), metadata leader, partitions led, under-replicated, offline
  bench    produce, consume, e2e: throughput and latency, every record verified;
           --vs ADDR compares with another cluster

--brokers, before the command or after it, names the cluster the client tools
talk to (default: env VARVE_BROKERS, else `+client.DefaultBrokers+`). Tables are aligned
on a terminal and tab-separated when piped; -o json prints JSON. Errors are one
line on stderr: exit 1, or 2 for a mistake on the command line.
`)
}

// globalBrokersKey carries the global --brokers to the tools.
type globalBrokersKey struct{}

// withGlobalBrokers returns ctx carrying the --brokers given before the
// tool's name ("" for none).
func withGlobalBrokers(ctx context.Context, brokers string) context.Context {
	if brokers == "" {
		return ctx
	}
	return context.WithValue(ctx, globalBrokersKey{}, brokers)
}

// brokerList is where the tool connects: its own --brokers if given, else
// the global one, else the flag's default (VARVE_BROKERS or
// client.DefaultBrokers).
func (t *toolFlags) brokerList(ctx context.Context) []string {
	own := false
	t.Visit(func(f *flag.Flag) { own = own || f.Name == "brokers" })
	if g, ok := ctx.Value(globalBrokersKey{}).(string); ok && !own {
		return client.ParseBrokers(g)
	}
	return client.ParseBrokers(t.brokers)
}
