package sdk

import (
	"sort"
	"strings"
)

// Redacted is the text that replaces a secret in messages.
const Redacted = "[redacted]"

// RedactString replaces every secret in s with Redacted, longest secrets
// first (so that a secret containing another is replaced whole). Empty
// secrets are ignored.
func RedactString(s string, secrets ...string) string {
	list := make([]string, 0, len(secrets))
	for _, x := range secrets {
		if x != "" && strings.Contains(s, x) {
			list = append(list, x)
		}
	}
	sort.Slice(list, func(i, j int) bool { return len(list[i]) > len(list[j]) })
	for _, x := range list {
		s = strings.ReplaceAll(s, x, Redacted)
	}
	return s
}

// Redact returns err with every secret in its text replaced by Redacted.
// The result still unwraps to err, so errors.Is and errors.As see through
// it. A nil err, or one whose text holds no secret, is returned as it is.
func Redact(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := RedactString(err.Error(), secrets...)
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
