// Package testpg finds the PostgreSQL server tests run against: the
// machine's server at 127.0.0.1:5432, database test, trust auth (CI starts
// it when it is down), as user postgres or the current user.
// PIPELINE_TEST_PG_DSN overrides. Without a server the test skips and says
// why.
package testpg

import (
	"context"
	"os"
	"os/user"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DSN returns a connection string that works, or skips t.
func DSN(t testing.TB) string {
	t.Helper()
	var tries []string
	if d := os.Getenv("PIPELINE_TEST_PG_DSN"); d != "" {
		tries = append(tries, d)
	}
	tries = append(tries, "host=127.0.0.1 port=5432 dbname=test user=postgres sslmode=disable connect_timeout=3")
	if u, err := user.Current(); err == nil {
		tries = append(tries, "host=127.0.0.1 port=5432 dbname=test user="+u.Username+" sslmode=disable connect_timeout=3")
	}
	var last error
	for _, dsn := range tries {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := pgx.Connect(ctx, dsn)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return dsn
		}
		last = err
	}
	t.Skipf("no PostgreSQL test server at 127.0.0.1:5432 (database test, trust auth): %v", last)
	return ""
}
