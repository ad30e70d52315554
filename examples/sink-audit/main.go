// Command sink-audit is a complete custom sink: it appends one line per
// record, "<id> <record as JSON>", to a file.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
)

// Audit is the sink. Its fields hold the decoded config and the open file.
type Audit struct {
	Path string `json:"path"`
	f    *os.File
	enc  *arrowjson.Encoder
}

// Info declares the plugin and the one attribute its block takes.
func (a *Audit) Info() sdk.Info {
	return sdk.Info{Kind: sdk.KindSink, Type: "audit", Version: "1.0.0",
		Description: "Appends one line per record to a file.",
		Config:      []sdk.Attribute{{Name: "path", Type: sdk.String, Required: true}}}
}

// Configure receives the block, already checked against Info. It must not
// write anything: `pipeline validate` configures plugins too.
func (a *Audit) Configure(_ context.Context, cfg sdk.Config) error {
	a.enc = arrowjson.NewEncoder()
	return cfg.Decode(a)
}

// Write appends the batch; returning nil acks it, so it is synced first.
func (a *Audit) Write(_ context.Context, b sdk.Batch) error {
	if a.f == nil {
		f, err := os.OpenFile(a.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		a.f = f
	}
	var buf []byte
	for i := 0; i < b.Len(); i++ {
		buf = append(buf, b.ID(i)+" "...)
		buf = append(a.enc.AppendRow(buf, b.Record, i), '\n')
	}
	if _, err := a.f.Write(buf); err != nil {
		return fmt.Errorf("append to %s: %w", a.Path, err)
	}
	return a.f.Sync()
}

func main() { sdk.Serve(&Audit{}) }
