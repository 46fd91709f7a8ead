package main

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
)

// TestMetricsGroupLagSetting: the lag opt-in is off by default and is set
// like every other serve setting, by flag, environment or YAML key.
func TestMetricsGroupLagSetting(t *testing.T) {
	yamlFile := filepath.Join(t.TempDir(), "varve.yaml")
	if err := os.WriteFile(yamlFile, []byte("metrics-group-lag: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want bool
	}{
		{"default", nil, nil, false},
		{"flag", []string{"--metrics-group-lag"}, nil, true},
		{"env", nil, map[string]string{"VARVE_METRICS_GROUP_LAG": "true"}, true},
		{"yaml", []string{"--config", yamlFile}, nil, true},
		{"flag over yaml", []string{"--config", yamlFile, "--metrics-group-lag=false"}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s serveFlags
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			s.register(fs)
			if err := resolveSettings(fs, tc.args, func(k string) string { return tc.env[k] }); err != nil {
				t.Fatal(err)
			}
			if s.metricsGroupLag != tc.want {
				t.Fatalf("metricsGroupLag = %v, want %v", s.metricsGroupLag, tc.want)
			}
		})
	}
}
