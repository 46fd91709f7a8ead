package checker

import (
	"fmt"
	"strings"
	"testing"
)

// Violation is one broken promise and the evidence for it.
type Violation struct {
	What     string   // one line: what is wrong
	Evidence []string // values, offsets, which replica or poll, history clock
}

func (v Violation) String() string {
	if len(v.Evidence) == 0 {
		return v.What
	}
	return v.What + "\n      " + strings.Join(v.Evidence, "\n      ")
}

// CheckResult is one check's outcome.
type CheckResult struct {
	ID         string // "a".."h", "r" (row 8, replica agreement)
	Name       string
	Examined   int // operations (or records, or batches) the check looked at
	Violations []Violation
}

// Report is the outcome of every check, plus what the history held.
type Report struct {
	Checks  []*CheckResult
	Summary []string // counts of what was recorded
	Notes   []string // the history's notes (fault schedule, oddities)
}

// maxPrinted bounds the violations String prints per check; the Report
// itself keeps every one.
const maxPrinted = 50

// Get is the result of check id (nil if there is none).
func (r *Report) Get(id string) *CheckResult {
	for _, c := range r.Checks {
		if c.ID == id {
			return c
		}
	}
	return nil
}

// Violations is the number of violations over every check.
func (r *Report) Violations() int {
	n := 0
	for _, c := range r.Checks {
		n += len(c.Violations)
	}
	return n
}

// OK reports whether no check found a violation.
func (r *Report) OK() bool { return r.Violations() == 0 }

// Counts is one line per check, "a=1200/0" (examined/violations), for logs
// and RELIABILITY.md.
func (r *Report) Counts() string {
	var parts []string
	for _, c := range r.Checks {
		parts = append(parts, fmt.Sprintf("%s=%d/%d", c.ID, c.Examined, len(c.Violations)))
	}
	return strings.Join(parts, " ")
}

func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "checker: %d violations (examined/violations: %s)\n", r.Violations(), r.Counts())
	for _, s := range r.Summary {
		fmt.Fprintf(&b, "  %s\n", s)
	}
	for _, c := range r.Checks {
		fmt.Fprintf(&b, "(%s) %s: %d examined, %d violations\n", c.ID, c.Name, c.Examined, len(c.Violations))
		for i, v := range c.Violations {
			if i == maxPrinted {
				fmt.Fprintf(&b, "    ... and %d more\n", len(c.Violations)-maxPrinted)
				break
			}
			fmt.Fprintf(&b, "    - %s\n", v)
		}
	}
	if len(r.Notes) > 0 {
		b.WriteString("notes:\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "  %s\n", n)
		}
	}
	return b.String()
}

// Require fails t with the report when any check found a violation, and
// logs it otherwise. It also fails t when a check in mustExamine examined
// nothing: a check that looked at nothing proves nothing.
func (r *Report) Require(t testing.TB, mustExamine ...string) {
	t.Helper()
	var empty []string
	for _, id := range mustExamine {
		if c := r.Get(id); c == nil || c.Examined == 0 {
			empty = append(empty, id)
		}
	}
	switch {
	case !r.OK():
		t.Fatalf("%s", r)
	case len(empty) > 0:
		t.Fatalf("checks %v examined nothing\n%s", empty, r)
	default:
		t.Logf("%s", r)
	}
}
