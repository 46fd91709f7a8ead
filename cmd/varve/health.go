package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"os"
	"strings"
	"time"
)

// runHealth is varve health: one GET of /healthz (or /readyz with --ready)
// on a broker's admin listener. It returns nil on 200 and otherwise an
// error that fits on one line, so a container health check built FROM
// scratch (no shell, no curl) can run it in exec form:
//
//	["CMD", "/varve", "health", "--ready", "--admin-addr", "127.0.0.1:9644"]
func runHealth(args []string) error {
	fs := flag.NewFlagSet("health", flag.ContinueOnError)
	adminAddr := fs.String("admin-addr", "127.0.0.1:9644", "the broker's admin HTTP address (HOST:PORT)")
	ready := fs.Bool("ready", false, "ask /readyz (answering Kafka requests) instead of /healthz (storage healthy)")
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	fs.SetOutput(io.Discard) // main prints an error once, on one line
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandHelp(os.Stdout, fs, "varve health [--ready] [--admin-addr HOST:PORT] [--timeout DURATION]", healthExamples)
			return nil
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	path := "/healthz"
	if *ready {
		path = "/readyz"
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	return checkHealth(ctx, http.DefaultClient, "http://"+*adminAddr+path)
}

// checkHealth GETs url: nil on 200, else an error naming the status and
// the first line of the body (the broker's reason).
func checkHealth(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *neturl.Error
		if errors.As(err, &ue) {
			err = ue.Err // it repeats the method and the URL
		}
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	reason, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
	if reason == "" {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return fmt.Errorf("GET %s: %s: %s", url, resp.Status, reason)
}
