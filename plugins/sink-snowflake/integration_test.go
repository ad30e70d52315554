package sinksnowflake

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/snowflakedb/gosnowflake"
)

// TestSnowflakeIntegration loads into a real account: set SNOWFLAKE_DSN
// (user:password@account/database/schema?warehouse=WH). It creates a table
// PIPELINE_IT_<time>, loads and merges into it twice, checks the rows and
// drops the tables.
func TestSnowflakeIntegration(t *testing.T) {
	dsn := os.Getenv("SNOWFLAKE_DSN")
	if dsn == "" {
		t.Skip("SNOWFLAKE_DSN not set: skipping the Snowflake integration test; see docs/warehouses.md")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	table := fmt.Sprintf("PIPELINE_IT_%d", time.Now().UnixNano())
	s, _ := newSink(t, map[string]any{"dsn": dsn, "table": table, "types": map[string]string{"created_at": "timestamp"}})
	db := sql.OpenDB(gosnowflake.NewConnector(gosnowflake.SnowflakeDriver{}, mustParse(t, dsn)))
	defer db.Close()
	t.Cleanup(func() {
		for _, tr := range []tableRef{s.table, s.table.staging()} {
			if _, err := db.ExecContext(context.Background(), "DROP TABLE IF EXISTS "+tr.String()); err != nil {
				t.Logf("drop %s: %v", tr, err)
			}
		}
	})

	if err := s.Write(ctx, batch(t, testFields, `[
		{"_pipeline_id": "r1", "name": "Ada", "age": 36, "score": 1.5, "active": true, "created_at": "2024-05-01T10:00:00Z", "address": {"city": "London", "zip": "N1"}, "tags": ["a"]},
		{"_pipeline_id": "r2", "name": "Grace", "age": 85}
	]`)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, batch(t, testFields[:3], `[{"_pipeline_id": "r1", "name": "Ada L.", "age": 37}]`)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	var n int
	var name, city string
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+s.table.String()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("rows = %d, want 2 (r1 merged)", n)
	}
	q := `SELECT "NAME", "ADDRESS":city::string FROM ` + s.table.String() + ` WHERE "_PIPELINE_ID" = 'r1'`
	if err := db.QueryRowContext(ctx, q).Scan(&name, &city); err != nil {
		t.Fatal(err)
	}
	if name != "Ada L." || city != "London" {
		t.Errorf("r1 = %q, %q; want the merged name and the first load's city", name, city)
	}
}

func mustParse(t *testing.T, dsn string) gosnowflake.Config {
	cfg, err := gosnowflake.ParseDSN(dsn)
	if err != nil {
		t.Fatal("SNOWFLAKE_DSN does not parse")
	}
	return *cfg
}
