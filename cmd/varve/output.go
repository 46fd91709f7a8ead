package main

// The client tools (produce, consume, topic, group, cluster) share this
// file: how main runs them, their flag handling and help, and how they
// print. Each tool is a toolFunc, so a test runs it with its own
// arguments, stdin and output buffers, exactly as main does.

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/varvelog/varve/client"
)

// toolFunc is one client tool: args are what follows its name. It returns
// nil on success; an error is printed by invokeTool as one line.
type toolFunc func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error

var tools = map[string]toolFunc{
	"produce": runProduce,
	"consume": runConsume,
	"topic":   runTopic,
	"group":   runGroup,
	"cluster": runCluster,
	"bench":   runBench,
}

// runTool is main's entry to the client tools: SIGINT and SIGTERM cancel
// the context (a consumer then stops cleanly and exits 0); a second
// signal kills the process as usual. brokers is the global --brokers
// given before the tool's name ("" for none).
func runTool(name string, args []string, brokers string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // restore the default handlers: a second ^C kills
	}()
	return invokeTool(withGlobalBrokers(ctx, brokers), name, args, os.Stdin, os.Stdout, os.Stderr)
}

// invokeTool runs tool name and returns the exit code: 0, 1 for an error
// or 2 for a usage error, printed as one line on stderr.
func invokeTool(ctx context.Context, name string, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	f, ok := tools[name]
	if !ok {
		fmt.Fprintf(stderr, "varve: unknown command %q\n", name)
		return 2
	}
	err := f(ctx, args, stdin, stdout, stderr)
	if err == nil {
		return 0
	}
	if ne, ok := errors.AsType[namedError](err); ok {
		name = ne.name
	}
	msg := strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
	fmt.Fprintf(stderr, "varve %s: %s\n", name, msg)
	if _, ok := errors.AsType[usageError](err); ok {
		return 2
	}
	return 1
}

// usageError is a mistake on the command line (exit code 2).
type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// namedError names the subcommand (topic create) an error came from.
type namedError struct {
	name string
	error
}

func (e namedError) Unwrap() error { return e.error }

// errHelped means --help was printed: the tool returns nil.
var errHelped = errors.New("help printed")

// toolFlags is a tool's flag set with the flags every tool has.
type toolFlags struct {
	*flag.FlagSet
	synopsis, examples string
	brokers            string
	output             string // "" when the tool has no -o
}

// newToolFlags makes the flag set of tool `name` ("topic create");
// synopsis is its usage line, examples follow "Examples:" in --help.
func newToolFlags(name, synopsis, examples string) *toolFlags {
	t := &toolFlags{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), synopsis: synopsis, examples: examples}
	t.SetOutput(io.Discard)
	t.Usage = func() {}
	def := os.Getenv("VARVE_BROKERS")
	if def == "" {
		def = client.DefaultBrokers
	}
	t.StringVar(&t.brokers, "brokers", def, "comma-separated seed brokers `HOST:PORT,...` (env VARVE_BROKERS)")
	return t
}

// withOutput adds -o: text (a table on a terminal, tab-separated when
// piped) or json.
func (t *toolFlags) withOutput() *toolFlags {
	t.StringVar(&t.output, "o", "text", "output `text|json`: text is aligned on a terminal, tab-separated when piped")
	return t
}

// parse reads args, flags and positional arguments in any order ("--"
// ends the flags), and checks that there are exactly nPos positional
// arguments (-1: any number). It returns errHelped after printing --help
// to stdout.
func (t *toolFlags) parse(args []string, nPos int, stdout io.Writer) ([]string, error) {
	var pos []string
	for {
		if err := t.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				t.printHelp(stdout)
				return nil, errHelped
			}
			return nil, usageError{fmt.Errorf("%w (see --help)", err)}
		}
		rest := t.Args()
		if len(rest) == 0 {
			break
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if nPos >= 0 && len(pos) != nPos {
		if len(pos) > nPos {
			return nil, usagef("unexpected argument %q (usage: %s)", pos[nPos], t.synopsis)
		}
		return nil, usagef("missing argument (usage: %s)", t.synopsis)
	}
	if t.output != "" && t.output != "text" && t.output != "json" {
		return nil, usagef("-o %q: want text or json", t.output)
	}
	return pos, nil
}

func (t *toolFlags) printHelp(w io.Writer) {
	fmt.Fprintf(w, "Usage: %s\n", t.synopsis)
	if t.examples != "" {
		fmt.Fprintf(w, "\nExamples:\n%s", t.examples)
	}
	fmt.Fprintf(w, "\nFlags:\n")
	t.VisitAll(func(f *flag.Flag) {
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		typ, usage := flag.UnquoteUsage(f)
		if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); isBool {
			typ = ""
		}
		line := "  " + dash + f.Name
		if typ != "" {
			line += " " + strings.ToUpper(typ)
		}
		switch f.DefValue {
		case "", "false", "0", "-1":
		default:
			if !strings.Contains(usage, "default") {
				usage += fmt.Sprintf(" (default %s)", f.DefValue)
			}
		}
		fmt.Fprintf(w, "%s\n    \t%s\n", line, usage)
	})
}

// connect builds the clients for the --brokers given.
func (t *toolFlags) connect(ctx context.Context, opts ...kgo.Opt) (*kgo.Client, *kadm.Client, error) {
	cfg := client.DefaultConfig()
	cfg.Brokers = t.brokerList(ctx)
	if len(cfg.Brokers) == 0 {
		return nil, nil, usagef("--brokers is empty")
	}
	return client.New(ctx, cfg, opts...)
}

// printer returns the printer for -o onto w.
func (t *toolFlags) printer(w io.Writer) *printer {
	p := &printer{w: w, json: t.output == "json"}
	p.aligned = !p.json && isTerminal(w)
	return p
}

// stringList is a repeatable flag (-H k=v -H k=v).
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// keyValues splits each "key=value" at its first '='.
func keyValues(flagName string, list []string) ([][2]string, error) {
	var out [][2]string
	for _, kv := range list {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usagef("%s %q: want key=value", flagName, kv)
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

// isTerminal says whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// printer prints a tool's answer: sections of "name: value" fields and
// tables, separated by blank lines, aligned on a terminal and
// tab-separated otherwise; or, with -o json, one JSON document instead.
type printer struct {
	w       io.Writer
	json    bool
	aligned bool
	started bool
}

func (p *printer) section() {
	if p.started {
		fmt.Fprintln(p.w)
	}
	p.started = true
}

// fields prints name/value pairs, one per line.
func (p *printer) fields(pairs ...[2]string) {
	p.section()
	rows := make([][]string, len(pairs))
	for i, kv := range pairs {
		name := kv[0]
		if p.aligned {
			name += ":"
		}
		rows[i] = []string{name, kv[1]}
	}
	p.rows(rows)
}

// table prints a header line and rows; empty cells print as "-".
func (p *printer) table(header []string, rows [][]string) {
	p.section()
	p.rows(append([][]string{header}, rows...))
}

func (p *printer) rows(rows [][]string) {
	var w io.Writer = p.w
	var tw *tabwriter.Writer
	if p.aligned {
		tw = tabwriter.NewWriter(p.w, 0, 8, 2, ' ', 0)
		w = tw
	}
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			if c == "" {
				c = "-"
			}
			cells[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(c)
		}
		fmt.Fprintln(w, strings.Join(cells, "\t"))
	}
	if tw != nil {
		_ = tw.Flush()
	}
}

// writeJSON prints v as indented JSON.
func (p *printer) writeJSON(v any) error {
	enc := json.NewEncoder(p.w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// kadmErr joins a kadm per-item error with the broker's message, which
// is more specific than the Kafka error's generic description: for
// example TOPIC_ALREADY_EXISTS: broker: topic already exists: "demo".
func kadmErr(err error, msg string) error {
	if err == nil || msg == "" || strings.Contains(err.Error(), msg) {
		return err
	}
	return brokerMessageError{err, msg}
}

type brokerMessageError struct {
	err error
	msg string
}

func (e brokerMessageError) Error() string {
	if ke, ok := errors.AsType[*kerr.Error](e.err); ok {
		return ke.Message + ": " + e.msg
	}
	return e.err.Error() + ": " + e.msg
}

func (e brokerMessageError) Unwrap() error { return e.err }

// subcommand is one verb of a tool with subcommands (topic create).
type subcommand struct {
	name, summary string
	run           toolFunc
}

// runSub dispatches args[0] among subs; with no verb, help or --help it
// lists them (on stdout for help, as a usage error otherwise).
func runSub(ctx context.Context, tool string, subs []subcommand, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	list := func(w io.Writer) {
		fmt.Fprintf(w, "Usage: varve %s COMMAND [flags] (varve %s COMMAND --help for each)\n\nCommands:\n", tool, tool)
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		for _, s := range subs {
			fmt.Fprintf(tw, "  %s\t%s\n", s.name, s.summary)
		}
		_ = tw.Flush()
	}
	if len(args) > 0 {
		switch args[0] {
		case "help", "-h", "-help", "--help":
			list(stdout)
			return nil
		}
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return usagef("missing command: one of %s (see varve %s --help)", subNames(subs), tool)
	}
	for _, s := range subs {
		if s.name == args[0] {
			if err := s.run(ctx, args[1:], stdin, stdout, stderr); err != nil {
				return namedError{tool + " " + s.name, err}
			}
			return nil
		}
	}
	return usagef("unknown command %q: want one of %s", args[0], subNames(subs))
}

func subNames(subs []subcommand) string {
	names := make([]string, len(subs))
	for i, s := range subs {
		names[i] = s.name
	}
	return strings.Join(names, ", ")
}
