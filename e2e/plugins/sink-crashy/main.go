// Command sink-crashy is a sink for end-to-end tests: it appends each
// record's id to a file and, when CRASHY_AFTER=N is set, exits with status 3
// on receiving batch N+1, before acking it. With CRASHY_FAIL_AFTER=N it
// returns an error on batch N+1 instead; with CRASHY_BLOCK_AFTER=N it
// blocks on batch N+1 until the run ends (a sink that stopped acking);
// with CRASHY_HOLD_WHILE=PATH it holds every batch while PATH exists (a
// sink that is down, then comes back).
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
)

type sink struct {
	path    string
	batches int
	crashAt int
	failAt  int
	blockAt int
	hold    string
}

func (s *sink) Info() sdk.Info {
	return sdk.Info{Kind: sdk.KindSink, Type: "crashy", Version: "0.0.1", Config: []sdk.Attribute{
		{Name: "path", Type: sdk.String, Required: true},
	}}
}

func (s *sink) Configure(_ context.Context, cfg sdk.Config) error {
	var c struct {
		Path string `json:"path"`
	}
	if err := cfg.Decode(&c); err != nil {
		return err
	}
	s.path = c.Path
	s.crashAt, _ = strconv.Atoi(os.Getenv("CRASHY_AFTER"))
	s.failAt, _ = strconv.Atoi(os.Getenv("CRASHY_FAIL_AFTER"))
	s.blockAt, _ = strconv.Atoi(os.Getenv("CRASHY_BLOCK_AFTER"))
	s.hold = os.Getenv("CRASHY_HOLD_WHILE")
	return nil
}

func (s *sink) Write(ctx context.Context, b sdk.Batch) error {
	s.batches++
	if s.crashAt > 0 && s.batches > s.crashAt {
		sdk.Logger().Error("crashing on purpose", "batch", s.batches)
		os.Exit(3)
	}
	if s.failAt > 0 && s.batches > s.failAt {
		return fmt.Errorf("failing on purpose on batch %d", s.batches)
	}
	if s.blockAt > 0 && s.batches > s.blockAt {
		<-ctx.Done()
		return ctx.Err()
	}
	for s.hold != "" {
		if _, err := os.Stat(s.hold); err != nil {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	f, err := os.OpenFile(s.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	for i := 0; i < b.Len(); i++ {
		if _, err := f.WriteString(b.ID(i) + "\n"); err != nil {
			return err
		}
	}
	return f.Sync()
}

func main() { sdk.Serve(&sink{}) }
