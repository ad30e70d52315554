package sinksnowflake

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// fakeSnowflake speaks the part of Snowflake's REST protocol that
// gosnowflake uses for this sink: login (/session/v1/login-request),
// statements (/queries/v1/query-request) answered with the JSON result
// shape (rowtype, rowset, success), and PUT answered with stageInfo of
// locationType LOCAL_FS, so the real driver runs its upload path and
// writes the file into stageDir. It keeps a small catalog of the tables
// the sink creates and alters, to answer DESCRIBE TABLE.
type fakeSnowflake struct {
	t        *testing.T
	srv      *httptest.Server
	stageDir string

	mu      sync.Mutex
	queries []string
	logins  []map[string]any
	tables  map[string][][2]string // table ref → [name, type]
	failOn  string                 // a statement prefix answered with an error
	failMsg string
}

func newFakeSnowflake(t *testing.T) *fakeSnowflake {
	f := &fakeSnowflake{t: t, stageDir: t.TempDir(), tables: map[string][][2]string{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// dsn is a DSN for the fake server: plain HTTP, so no TLS or OCSP.
func (f *fakeSnowflake) dsn(password string) string {
	host := strings.TrimPrefix(f.srv.URL, "http://")
	return fmt.Sprintf("tester:%s@%s/ANALYTICS/PUBLIC?account=testacct&protocol=http&warehouse=LOAD_WH", password, host)
}

func (f *fakeSnowflake) sql() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.queries...)
}

func readBody(r *http.Request) ([]byte, error) {
	var rd io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			return nil, err
		}
		rd = zr
	}
	return io.ReadAll(rd)
}

func (f *fakeSnowflake) serve(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/session/v1/login-request":
		var req map[string]any
		_ = json.Unmarshal(body, &req)
		f.mu.Lock()
		f.logins = append(f.logins, req)
		f.mu.Unlock()
		writeJSON(w, map[string]any{
			"success": true,
			"data": map[string]any{
				"token":                   "session-token",
				"masterToken":             "master-token",
				"validityInSeconds":       3600,
				"masterValidityInSeconds": 14400,
				"sessionId":               4242,
				"serverVersion":           "9.0.0",
				"sessionInfo": map[string]any{
					"databaseName": "ANALYTICS", "schemaName": "PUBLIC", "warehouseName": "LOAD_WH", "roleName": "LOADER",
				},
			},
		})
	case "/queries/v1/query-request":
		var req struct {
			SQLText string `json:"sqlText"`
		}
		if err := json.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, f.query(req.SQLText))
	default:
		// Telemetry, session close, heartbeat.
		writeJSON(w, map[string]any{"success": true, "data": nil})
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	_ = json.NewEncoder(w).Encode(v)
}

var (
	reCreate   = regexp.MustCompile(`(?s)^CREATE (OR REPLACE )?(TRANSIENT )?TABLE (IF NOT EXISTS )?(\S+) \((.*)\)$`)
	reColDef   = regexp.MustCompile(`^\s*"((?:[^"]|"")+)" (.+?),?$`)
	reAlterAdd = regexp.MustCompile(`^ALTER TABLE (\S+) ADD COLUMN "((?:[^"]|"")+)" (.+)$`)
	rePut      = regexp.MustCompile(`^PUT 'file://([^']+)' (\S+)`)
	reCopyFile = regexp.MustCompile(`FILES = \('([^']+)'\)`)
)

func ok(data map[string]any) map[string]any {
	data["queryId"] = "01b2-fake"
	data["queryResultFormat"] = "json"
	return map[string]any{"success": true, "data": data, "code": nil, "message": nil}
}

func fail(msg string) map[string]any {
	return map[string]any{"success": false, "code": "002003", "message": msg,
		"data": map[string]any{"sqlState": "42S02", "queryId": "01b2-fake"}}
}

func textRowType(names ...string) []map[string]any {
	out := make([]map[string]any, len(names))
	for i, n := range names {
		out[i] = map[string]any{"name": n, "type": "text", "nullable": true, "length": 16777216, "byteLength": 16777216}
	}
	return out
}

func (f *fakeSnowflake) query(q string) map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries = append(f.queries, q)
	if f.failOn != "" && strings.HasPrefix(q, f.failOn) {
		return fail(f.failMsg)
	}
	switch {
	case reCreate.MatchString(q):
		m := reCreate.FindStringSubmatch(q)
		table := m[4]
		if _, exists := f.tables[table]; exists && m[1] == "" {
			break
		}
		var cols [][2]string
		for _, line := range strings.Split(strings.TrimSpace(m[5]), "\n") {
			if c := reColDef.FindStringSubmatch(line); c != nil {
				cols = append(cols, [2]string{strings.ReplaceAll(c[1], `""`, `"`), c[2]})
			}
		}
		f.tables[table] = cols
	case strings.HasPrefix(q, "DESCRIBE TABLE "):
		table := strings.TrimPrefix(q, "DESCRIBE TABLE ")
		cols, exists := f.tables[table]
		if !exists {
			return fail("Table '" + table + "' does not exist or not authorized.")
		}
		rows := make([][]*string, len(cols))
		for i, c := range cols {
			name, typ, kind, null := c[0], describeType(c[1]), "COLUMN", "Y"
			rows[i] = []*string{&name, &typ, &kind, &null}
		}
		return ok(map[string]any{"rowtype": textRowType("name", "type", "kind", "null?"), "rowset": rows,
			"total": len(rows), "returned": len(rows), "statementTypeId": 4096})
	case reAlterAdd.MatchString(q):
		m := reAlterAdd.FindStringSubmatch(q)
		f.tables[m[1]] = append(f.tables[m[1]], [2]string{strings.ReplaceAll(m[2], `""`, `"`), m[3]})
	case rePut.MatchString(q):
		m := rePut.FindStringSubmatch(q)
		return ok(map[string]any{
			"command":           "UPLOAD",
			"src_locations":     []string{m[1]},
			"autoCompress":      strings.Contains(q, "AUTO_COMPRESS = TRUE"),
			"sourceCompression": "none",
			"parallel":          1,
			"overwrite":         false,
			"stageInfo": map[string]any{
				"locationType": "LOCAL_FS",
				"location":     f.stageDir,
				"path":         "",
			},
			"rowtype": textRowType("source", "target", "source_size", "target_size", "source_compression", "target_compression", "status", "message"),
			"rowset":  [][]*string{},
		})
	case strings.HasPrefix(q, "COPY INTO "):
		m := reCopyFile.FindStringSubmatch(q)
		if m == nil {
			return fail("COPY without FILES")
		}
		if _, err := os.Stat(filepath.Join(f.stageDir, m[1])); err != nil {
			return fail("Remote file '" + m[1] + "' was not found.")
		}
		file, status := m[1], "LOADED"
		return ok(map[string]any{"rowtype": textRowType("file", "status"), "rowset": [][]*string{{&file, &status}}, "total": 1, "returned": 1})
	}
	return ok(map[string]any{})
}

// describeType is the type as DESCRIBE TABLE prints it.
func describeType(t string) string {
	switch t {
	case typeVarchar:
		return "VARCHAR(16777216)"
	case typeTimestampTZ:
		return "TIMESTAMP_TZ(9)"
	}
	return t
}

// loginFails answers every login with Snowflake's "incorrect username or
// password" error, echoing the password to test redaction.
func loginFails(password string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/session/v1/login-request" {
			writeJSON(w, map[string]any{"success": false, "code": "390100", "data": nil,
				"message": "Incorrect username or password was specified (" + password + ")."})
			return
		}
		writeJSON(w, map[string]any{"success": true, "data": nil})
	})
}
