package sdk

import (
	"errors"
	"fmt"
	"io"
	"testing"
)

func TestRedact(t *testing.T) {
	err := fmt.Errorf("login as bob:hunter2hunter2 failed: %w", io.ErrUnexpectedEOF)
	got := Redact(err, "", "hunter2", "hunter2hunter2")
	if got.Error() != "login as bob:[redacted] failed: unexpected EOF" {
		t.Fatalf("got %q", got)
	}
	if !errors.Is(got, io.ErrUnexpectedEOF) {
		t.Fatal("the redacted error no longer unwraps")
	}
	if Redact(err, "absent") != err || Redact(nil, "x") != nil {
		t.Fatal("an error without secrets must come back as it is")
	}
}
