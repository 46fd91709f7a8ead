package broker

import (
	"os"
	"strings"
	"testing"
)

// TestReadmeSupportTable keeps the README's supported-API table equal to
// the one the dispatch table renders. To update the README, paste the
// output of SupportTable (this test prints it on failure).
func TestReadmeSupportTable(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	want := SupportTable()
	if !strings.Contains(string(b), want) {
		t.Fatalf("README.md does not contain the current support table; replace it with:\n\n%s", want)
	}
}
