package main

import (
	"flag"
	"fmt"
	"strings"
)

// configReference renders every setting of varve serve as the Markdown
// table in README's Configuration section: the flag, its environment
// variable, its YAML key and its default, read from the flag set serve
// registers, so a new flag appears as soon as the table is regenerated
// (varve serve --print-config-reference; readme_test.go fails until then).
func configReference() string {
	var s serveFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	s.register(fs)
	var b strings.Builder
	b.WriteString("| flag | environment | YAML key | default | meaning |\n|---|---|---|---|---|\n")
	fs.VisitAll(func(f *flag.Flag) {
		row := configRow(f)
		fmt.Fprintf(&b, "| `--%s` | `%s` | %s | %s | %s |\n", f.Name, row.env, row.yamlKey, row.def, row.meaning)
	})
	return b.String()
}

// configRowCells are one flag's cells in the configuration table.
type configRowCells struct {
	env, yamlKey, def, meaning string
}

func configRow(f *flag.Flag) configRowCells {
	c := configRowCells{env: serveEnvName(f.Name), yamlKey: "`" + f.Name + "`", def: "`" + f.DefValue + "`"}
	if f.Name == "config" {
		c.yamlKey = "–" // the file cannot name itself
	}
	if f.DefValue == "" {
		c.def = "(empty)"
	}
	c.meaning = strings.ReplaceAll(f.Usage, "|", `\|`)
	return c
}

// serveEnvName is the environment variable of serve's flag name, as
// resolveSettings reads it (readme_test.go checks that it does).
func serveEnvName(name string) string {
	return "VARVE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}
