// Package pgdsn keeps PostgreSQL connection strings out of messages: the
// postgres source and sink report a DSN that does not parse by what is
// wrong with it, and mask what may be its password.
package pgdsn

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Error says which part of a DSN pgx could not parse ("invalid port",
// "failed to configure TLS (sslmode is invalid)"), never the DSN itself:
// pgx's message quotes it, and its masking of the password is best effort.
func Error(dsn string, err error) error {
	var why string
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		// The message is "cannot parse `<dsn, masked>`: <why>"; make the
		// same prefix to cut it off.
		const mark = "\x00"
		prefix := strings.TrimSuffix(pgconn.NewParseConfigError(pe.ConnString, mark, nil).Error(), mark)
		if rest, ok := strings.CutPrefix(pe.Error(), prefix); ok {
			why = rest
		}
	}
	for _, pw := range Passwords(dsn) {
		why = strings.ReplaceAll(why, pw, "xxxxx")
	}
	const want = `a PostgreSQL connection string such as "postgres://user@host:5432/db" or "host=... dbname=..."`
	if why == "" || strings.Contains(why, dsn) {
		return errors.New("dsn is not " + want)
	}
	return fmt.Errorf("dsn: %s; want %s", why, want)
}

var (
	kvPassword  = regexp.MustCompile(`password\s*=\s*('(?:[^'\\]|\\.)*'?|\S+)`)
	urlPassword = regexp.MustCompile(`^[a-z]+://[^/?#@:]*:([^/?#]*)@`)
)

// Passwords finds what may be passwords in a DSN, also one that does not
// parse, generously, so that error messages can mask them.
func Passwords(dsn string) []string {
	var out []string
	for _, m := range kvPassword.FindAllStringSubmatch(dsn, -1) {
		out = append(out, m[1], strings.Trim(m[1], "'"))
	}
	if m := urlPassword.FindStringSubmatch(dsn); m != nil {
		out = append(out, m[1])
	}
	kept := out[:0]
	for _, pw := range out {
		if pw != "" {
			kept = append(kept, pw)
		}
	}
	return kept
}
