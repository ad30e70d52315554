package sinkslack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
	"github.com/pipelinehq/pipeline/sdk/delivery"
)

// The secrets of the tests: a bot token and the secret last segment of an
// incoming-webhook URL, shaped like Slack's.
const (
	token      = "xoxb-2718281828-3141592653-QwErTyUiOpAsDfGhJkLzXcVb"
	hookSecret = "Zx9Qw8Er7Ty6Ui5Op4As3Df2"
	hookPath   = "/services/T00000000/B00000000/" + hookSecret
)

// batch decodes JSON records and adds ids and rendered templates (one value
// per record for each attribute) the way the engine does.
func batch(t *testing.T, ids []string, templates map[string][]string, records ...string) sdk.Batch {
	t.Helper()
	dec := arrowjson.NewDecoder(arrowjson.Options{})
	defer dec.Release()
	for _, r := range records {
		if err := dec.Append([]byte(r)); err != nil {
			t.Fatal(err)
		}
	}
	rec := dec.Flush()
	fields := append([]arrow.Field(nil), rec.Schema().Fields()...)
	cols := append([]arrow.Array(nil), rec.Columns()...)
	add := func(name string, vals []string) {
		if len(vals) != len(records) {
			t.Fatalf("%s: %d values for %d records", name, len(vals), len(records))
		}
		b := array.NewStringBuilder(memory.DefaultAllocator)
		b.AppendValues(vals, nil)
		fields = append(fields, arrow.Field{Name: name, Type: arrow.BinaryTypes.String, Nullable: true})
		cols = append(cols, b.NewArray())
	}
	add(sdk.IDColumn, ids)
	for _, attr := range sortedKeys(templates) {
		add(sdk.TemplateColumnPrefix+attr, templates[attr])
	}
	return sdk.NewBatch(array.NewRecordBatch(arrow.NewSchema(fields, nil), cols, rec.NumRows()))
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// records returns n trivial records and their ids a, b, c, ...
func records(n int) ([]string, []string) {
	var ids, recs []string
	for i := range n {
		ids = append(ids, string(rune('a'+i)))
		recs = append(recs, fmt.Sprintf(`{"x":%d}`, i+1))
	}
	return ids, recs
}

// syncBuffer is a log destination the test reads while the sink writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type fixture struct {
	s   *Sink
	out *delivery.MemoryOutbox
	log *syncBuffer // the sink's log lines
}

// webhookMode and apiMode are the base configurations of the two modes for
// a test server; cfg adds to them (a nil value unsets an attribute: JSON
// null decodes as absent).
func webhookMode(srv *httptest.Server) map[string]any {
	return map[string]any{"webhook_url": srv.URL + hookPath}
}

func apiMode(srv *httptest.Server) map[string]any {
	return map[string]any{"token": token, "channel": "C0000000001", "api_url": srv.URL + "/api"}
}

func merge(maps ...map[string]any) map[string]any {
	out := map[string]any{}
	for _, m := range maps {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

// configure makes a sink over an in-memory outbox with fast retries, no
// pacing to speak of, and the private-network opt-in (the test servers are
// on loopback). templates names the attributes that hold placeholders.
func configure(t *testing.T, cfg map[string]any, templates ...string) fixture {
	t.Helper()
	return configureSink(t, &Sink{}, cfg, templates...)
}

// configureSink is configure for a sink the test has prepared (given a
// clock, say).
func configureSink(t *testing.T, s *Sink, cfg map[string]any, templates ...string) fixture {
	t.Helper()
	full := merge(map[string]any{"text": "Churn risk", "api_url": DefaultAPIURL, "timeout": "2s", "concurrency": 1,
		"rate_limit": "100/s", "allow_private_networks": true, "https_only": false,
		"retry":           map[string]any{"schedule": []string{"0s", "10ms", "10ms", "10ms"}},
		"circuit_breaker": map[string]any{"failures": 100}}, cfg)
	data, err := json.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	f := fixture{out: delivery.NewMemoryOutbox(), log: &syncBuffer{}}
	f.s = s
	f.s.log = slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if err := f.s.Configure(context.Background(), sdk.Config{Name: "alerts", JSON: data, Templates: templates, Outbox: f.out}); err != nil {
		t.Fatal(err)
	}
	return f
}

// deliver writes the batch and waits until nothing is pending.
func (f fixture) deliver(t *testing.T, b sdk.Batch) {
	t.Helper()
	if err := f.s.Write(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := f.s.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

type request struct {
	at     time.Time
	method string
	path   string
	query  string
	header http.Header
	body   []byte
}

// server records each request and answers it with answer(n, r, w), n
// counting the requests with that body (the attempts of one message).
func server(t *testing.T, answer func(n int, r request, w http.ResponseWriter)) (*httptest.Server, func() []request) {
	t.Helper()
	var mu sync.Mutex
	var reqs []request
	count := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, hr *http.Request) {
		body, _ := io.ReadAll(hr.Body)
		r := request{at: time.Now(), method: hr.Method, path: hr.URL.Path, query: hr.URL.RawQuery, header: hr.Header.Clone(), body: body}
		mu.Lock()
		reqs = append(reqs, r)
		count[string(body)]++
		n := count[string(body)]
		mu.Unlock()
		answer(n, r, w)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []request {
		mu.Lock()
		defer mu.Unlock()
		return append([]request(nil), reqs...)
	}
}

// Slack's answers.
func webhookOK(w http.ResponseWriter) { io.WriteString(w, "ok") }

func webhookError(w http.ResponseWriter, status int, slackErr string) {
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(status)
	io.WriteString(w, slackErr)
}

func apiOK(w http.ResponseWriter, channel string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	fmt.Fprintf(w, `{"ok":true,"channel":%q,"ts":"1503435956.000247","message":{"text":"Churn risk","type":"message","subtype":"bot_message"}}`, channel)
}

func apiError(w http.ResponseWriter, status int, slackErr string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"ok":false,"error":%q}`, slackErr)
}

// ok answers as Slack does on success, in whichever mode the request is.
func ok(w http.ResponseWriter, r request) {
	if strings.HasSuffix(r.path, "/chat.postMessage") {
		var m struct{ Channel string }
		json.Unmarshal(r.body, &m)
		apiOK(w, m.Channel)
		return
	}
	webhookOK(w)
}

func decode(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("body is not a JSON object: %v\n%s", err, body)
	}
	return v
}

// Each request is checked as Slack documents it: an incoming webhook takes
// a JSON POST of {"text", "blocks"} on its own URL; chat.postMessage takes
// a JSON POST of {"channel", "text", "blocks"} with a bearer token and a
// charset on the content type.
func TestRequestsAsSlackDocumentsThem(t *testing.T) {
	blocksTpl := `[{"type":"section","text":{"type":"mrkdwn","text":"*{{ metadata.customer_id }}*: {{ classifications.churn_risk.label }}"}}]`
	rendered := []string{
		`[{"type":"section","text":{"type":"mrkdwn","text":"*c1*: High"}}]`,
		`[ {"type": "section", "text": {"type": "mrkdwn", "text": "*c2*: <https://crm.example/c2|Medium> & more"}},
		   {"type": "divider"} ]`,
	}
	texts := []string{"Churn risk High for c1", "Churn risk Medium for c2"}
	tests := []struct {
		name        string
		cfg         func(*httptest.Server) map[string]any
		templates   map[string][]string
		path        string
		auth        string
		contentType string
		want        []string // bodies, in record order
	}{
		{
			name:        "incoming webhook",
			cfg:         webhookMode,
			templates:   map[string][]string{"text": texts, "blocks": rendered},
			path:        hookPath,
			auth:        "",
			contentType: "application/json",
			want: []string{
				`{"text":"Churn risk High for c1","blocks":[{"type":"section","text":{"type":"mrkdwn","text":"*c1*: High"}}]}`,
				`{"text":"Churn risk Medium for c2","blocks":[{"type":"section","text":{"type":"mrkdwn","text":"*c2*: <https://crm.example/c2|Medium> & more"}},{"type":"divider"}]}`,
			},
		},
		{
			name:        "chat.postMessage",
			cfg:         apiMode,
			templates:   map[string][]string{"text": texts, "blocks": rendered, "channel": {"C0000000001", " C0000000002 "}},
			path:        "/api/chat.postMessage",
			auth:        "Bearer " + token,
			contentType: "application/json; charset=utf-8",
			want: []string{
				`{"channel":"C0000000001","text":"Churn risk High for c1","blocks":[{"type":"section","text":{"type":"mrkdwn","text":"*c1*: High"}}]}`,
				`{"channel":"C0000000002","text":"Churn risk Medium for c2","blocks":[{"type":"section","text":{"type":"mrkdwn","text":"*c2*: <https://crm.example/c2|Medium> & more"}},{"type":"divider"}]}`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, reqs := server(t, func(_ int, r request, w http.ResponseWriter) { ok(w, r) })
			f := configure(t, merge(tt.cfg(srv), map[string]any{"text": "Churn risk {{ label }} for {{ id }}", "blocks": blocksTpl}), sortedKeys(tt.templates)...)
			f.deliver(t, batch(t, []string{"row_1", "row_2"}, tt.templates, `{"x":1}`, `{"x":2}`))

			got := reqs()
			if len(got) != 2 {
				t.Fatalf("%d requests, want 2", len(got))
			}
			slices.SortFunc(got, func(a, b request) int { return bytes.Compare(a.body, b.body) })
			for i, r := range got {
				if r.method != http.MethodPost || r.path != tt.path || r.query != "" {
					t.Errorf("request %d: %s %s?%s, want POST %s", i, r.method, r.path, r.query, tt.path)
				}
				if h := r.header.Get("Authorization"); h != tt.auth {
					t.Errorf("request %d: Authorization %q, want %q", i, h, tt.auth)
				}
				if h := r.header.Get("Content-Type"); h != tt.contentType {
					t.Errorf("request %d: Content-Type %q, want %q", i, h, tt.contentType)
				}
				if string(r.body) != tt.want[i] {
					t.Errorf("request %d: body\n%s\nwant\n%s", i, r.body, tt.want[i])
				}
				if blocks, isList := decode(t, r.body)["blocks"].([]any); !isList || len(blocks) == 0 {
					t.Errorf("request %d: blocks are not a JSON array: %s", i, r.body)
				}
			}
			for _, id := range []string{"row_1", "row_2"} {
				log := f.out.Log[id]
				if f.out.Status(id) != "delivered" || len(log) != 1 || log[0].StatusCode != 200 || log[0].Error != "" {
					t.Errorf("%s: status %q, log %+v", id, f.out.Status(id), log)
				}
			}
		})
	}
}

// Blocks without placeholders are sent as configured (compacted); rendered
// ones per record; an empty array is no blocks at all.
func TestBlocks(t *testing.T) {
	tests := []struct {
		name      string
		blocks    string
		templates map[string][]string
		want      []string // the blocks of each record's body, "" for none
	}{
		{
			name:   "constant blocks",
			blocks: "[\n  {\"type\": \"header\", \"text\": {\"type\": \"plain_text\", \"text\": \"Churn alert\"}}\n]",
			want:   []string{`[{"type":"header","text":{"type":"plain_text","text":"Churn alert"}}]`, `[{"type":"header","text":{"type":"plain_text","text":"Churn alert"}}]`},
		},
		{
			name:   "rendered per record, quotes escaped by the template",
			blocks: `[{"type":"section","text":{"type":"mrkdwn","text":{{ toJSON(text) }}}}]`,
			templates: map[string][]string{"blocks": {
				`[{"type":"section","text":{"type":"mrkdwn","text":"I want to \"cancel\""}}]`,
				`[{"type":"section","text":{"type":"mrkdwn","text":"Hej 📞"}}]`,
			}},
			want: []string{
				`[{"type":"section","text":{"type":"mrkdwn","text":"I want to \"cancel\""}}]`,
				`[{"type":"section","text":{"type":"mrkdwn","text":"Hej 📞"}}]`,
			},
		},
		{
			name:      "a record whose blocks render empty",
			blocks:    `{{ metadata.blocks }}`,
			templates: map[string][]string{"blocks": {`[{"type":"divider"}]`, ``}},
			want:      []string{`[{"type":"divider"}]`, ""},
		},
		{name: "empty array", blocks: "[]", want: []string{"", ""}},
		{name: "no blocks", blocks: "", want: []string{"", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, reqs := server(t, func(_ int, r request, w http.ResponseWriter) { ok(w, r) })
			f := configure(t, merge(webhookMode(srv), map[string]any{"blocks": tt.blocks}), sortedKeys(tt.templates)...)
			texts := map[string][]string{"text": {"first", "second"}}
			for k, v := range tt.templates {
				texts[k] = v
			}
			f.deliver(t, batch(t, []string{"a", "b"}, texts, `{"x":1}`, `{"x":2}`))
			got := map[string]string{}
			for _, r := range reqs() {
				var m struct {
					Text   string
					Blocks json.RawMessage
				}
				if err := json.Unmarshal(r.body, &m); err != nil {
					t.Fatal(err)
				}
				got[m.Text] = string(m.Blocks)
			}
			want := map[string]string{"first": tt.want[0], "second": tt.want[1]}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("blocks by text %q, want %q", got, want)
			}
		})
	}
}

// A record whose rendered blocks are not a JSON array of blocks fails
// Prepare, naming the record; nothing of the batch is queued or sent.
func TestInvalidRenderedBlocksFailPrepare(t *testing.T) {
	good := `[{"type":"divider"}]`
	tests := []struct {
		name     string
		rendered string
		want     string
	}{
		{"unescaped quote from a placeholder", `[{"type":"section","text":{"type":"mrkdwn","text":"I want to "cancel""}}]`, "not valid JSON"},
		{"truncated", `[{"type":"section"`, "not valid JSON"},
		{"not JSON at all", `Churn risk High`, "not valid JSON"},
		{"an object, not an array", `{"type":"section","text":{"type":"mrkdwn","text":"x"}}`, "must be a JSON array of Block Kit blocks"},
		{"an array of strings", `["section"]`, "block 1 is a string, not an object"},
		{"a block without a type", `[{"type":"divider"},{"text":{"type":"mrkdwn","text":"x"}}]`, `block 2 has no "type"`},
		{"too many blocks", "[" + strings.Repeat(`{"type":"divider"},`, 50) + `{"type":"divider"}]`, "has 51 blocks"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, reqs := server(t, func(_ int, r request, w http.ResponseWriter) { ok(w, r) })
			f := configure(t, merge(apiMode(srv), map[string]any{"blocks": `[{{ x }}]`}), "blocks")
			err := f.s.Write(context.Background(), batch(t, []string{"row_a", "row_b"}, map[string][]string{"blocks": {good, tt.rendered}}, `{"x":1}`, `{"x":2}`))
			if err == nil {
				t.Fatal("Write accepted the batch")
			}
			for _, part := range []string{"record 2 (row_b)", "blocks: ", tt.want} {
				if !strings.Contains(err.Error(), part) {
					t.Errorf("error %q does not say %q", err, part)
				}
			}
			if err := f.s.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if st, _ := f.out.Pending(context.Background()); st.Pending+st.Dead != 0 || f.out.Status("row_a") != "" || len(reqs()) != 0 {
				t.Fatalf("queued %d, dead %d, sent %d: nothing of a failed batch may go out", st.Pending, st.Dead, len(reqs()))
			}
		})
	}
}

// Failures are logged with Slack's error string and classified with
// policy.ClassifySlack: transient errors are retried, the others go to the
// dead letter at once.
func TestOutcomes(t *testing.T) {
	tests := []struct {
		name     string
		mode     func(*httptest.Server) map[string]any
		answer   func(n int, r request, w http.ResponseWriter)
		attempts int
		status   string
		logWant  string // in the first attempt's error
		respWant string // in the first attempt's logged response
	}{
		{"chat.postMessage channel_not_found is dead", apiMode, func(_ int, _ request, w http.ResponseWriter) { apiError(w, 200, "channel_not_found") },
			1, "dead", "chat.postMessage: channel_not_found", `"error":"channel_not_found"`},
		{"chat.postMessage invalid_auth is dead", apiMode, func(_ int, _ request, w http.ResponseWriter) { apiError(w, 200, "invalid_auth") },
			1, "dead", "chat.postMessage: invalid_auth", "invalid_auth"},
		{"chat.postMessage ok false without an error is dead", apiMode, func(_ int, _ request, w http.ResponseWriter) { io.WriteString(w, `{"ok":false}`) },
			1, "dead", `"ok": false without an error string`, `{"ok":false}`},
		{"chat.postMessage internal_error is retried", apiMode, func(n int, r request, w http.ResponseWriter) {
			if n == 1 {
				apiError(w, 200, "internal_error")
				return
			}
			ok(w, r)
		}, 2, "delivered", "chat.postMessage: internal_error", "internal_error"},
		{"chat.postMessage 503 is retried until attempts run out", apiMode, func(_ int, _ request, w http.ResponseWriter) { apiError(w, 503, "service_unavailable") },
			4, "dead", "chat.postMessage: 503 service_unavailable", "service_unavailable"},
		{"a 200 that is not Slack's JSON is retried", apiMode, func(n int, r request, w http.ResponseWriter) {
			if n == 1 {
				io.WriteString(w, "<html>captive portal</html>")
				return
			}
			ok(w, r)
		}, 2, "delivered", "not Slack's JSON", "captive portal"},
		{"incoming webhook 404 no_service is dead", webhookMode, func(_ int, _ request, w http.ResponseWriter) { webhookError(w, 404, "no_service") },
			1, "dead", "incoming webhook: 404 no_service", "no_service"},
		{"incoming webhook 403 action_prohibited is dead", webhookMode, func(_ int, _ request, w http.ResponseWriter) { webhookError(w, 403, "action_prohibited") },
			1, "dead", "incoming webhook: 403 action_prohibited", "action_prohibited"},
		{"incoming webhook 400 invalid_blocks is dead", webhookMode, func(_ int, _ request, w http.ResponseWriter) { webhookError(w, 400, "invalid_blocks") },
			1, "dead", "incoming webhook: 400 invalid_blocks", "invalid_blocks"},
		{"incoming webhook 410 channel_is_archived is dead", webhookMode, func(_ int, _ request, w http.ResponseWriter) { webhookError(w, 410, "channel_is_archived") },
			1, "dead", "incoming webhook: 410 channel_is_archived", "channel_is_archived"},
		{"incoming webhook 500 is retried", webhookMode, func(n int, r request, w http.ResponseWriter) {
			if n == 1 {
				webhookError(w, 500, "")
				return
			}
			ok(w, r)
		}, 2, "delivered", "incoming webhook: 500 Internal Server Error", ""},
		{"a redirect is not followed", webhookMode, func(_ int, _ request, w http.ResponseWriter) {
			w.Header().Set("Location", "/elsewhere")
			w.WriteHeader(http.StatusFound)
		}, 4, "dead", "incoming webhook: 302 Found", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, reqs := server(t, tt.answer)
			f := configure(t, tt.mode(srv))
			f.deliver(t, batch(t, []string{"row_1"}, nil, `{"x":1}`))
			if n := len(reqs()); n != tt.attempts || f.out.Status("row_1") != tt.status {
				t.Fatalf("%d attempts, status %q; want %d, %q", n, f.out.Status("row_1"), tt.attempts, tt.status)
			}
			for _, r := range reqs() {
				if r.path == "/elsewhere" {
					t.Error("followed a redirect")
				}
			}
			log := f.out.Log["row_1"]
			if len(log) != tt.attempts {
				t.Fatalf("%d log entries for %d attempts", len(log), tt.attempts)
			}
			if !strings.Contains(log[0].Error, tt.logWant) || !strings.Contains(string(log[0].Response), tt.respWant) {
				t.Errorf("first attempt logged error %q, response %q; want %q, %q", log[0].Error, log[0].Response, tt.logWant, tt.respWant)
			}
			if last := log[len(log)-1]; tt.status == "delivered" && (last.Error != "" || last.StatusCode != 200) {
				t.Errorf("last attempt %+v", last)
			}
		})
	}
}

// 410 from an incoming webhook (channel_is_archived) disables it: the other
// messages go to the dead letter without a request.
func TestGoneDisablesTheWebhook(t *testing.T) {
	srv, reqs := server(t, func(_ int, _ request, w http.ResponseWriter) { webhookError(w, 410, "channel_is_archived") })
	f := configure(t, webhookMode(srv))
	ids, recs := records(3)
	f.deliver(t, batch(t, ids, map[string][]string{"text": {"1", "2", "3"}}, recs...))
	if n := len(reqs()); n != 1 {
		t.Fatalf("%d requests after 410, want 1", n)
	}
	for _, id := range ids {
		if f.out.Status(id) != "dead" {
			t.Errorf("%s: %s", id, f.out.Status(id))
		}
	}
}

// A rate-limited message is tried again once Retry-After has passed, and the
// channel's other messages wait as long.
func TestRetryAfter(t *testing.T) {
	limited := func(status int, body string) func(n int, r request, w http.ResponseWriter) {
		first := sync.Once{}
		return func(_ int, r request, w http.ResponseWriter) {
			answered := false
			first.Do(func() {
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(status)
				io.WriteString(w, body)
				answered = true
			})
			if !answered {
				ok(w, r)
			}
		}
	}
	tests := []struct {
		name    string
		mode    func(*httptest.Server) map[string]any
		answer  func(n int, r request, w http.ResponseWriter)
		logWant string
	}{
		{"chat.postMessage 429 ratelimited", apiMode, limited(429, `{"ok":false,"error":"ratelimited"}`), "chat.postMessage: 429 ratelimited"},
		{"chat.postMessage 200 ok false ratelimited", apiMode, limited(200, `{"ok":false,"error":"ratelimited"}`), "chat.postMessage: ratelimited"},
		{"incoming webhook 429", webhookMode, limited(429, "rate_limited"), "incoming webhook: 429 rate_limited"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, reqs := server(t, tt.answer)
			// rate_limit is far above 1/s so that only Retry-After can
			// explain a wait.
			clock := newFakeClock()
			f := configureSink(t, &Sink{now: clock.Now, sleep: clock.Sleep}, merge(tt.mode(srv), map[string]any{"rate_limit": "50/s"}))
			ids, recs := records(2)
			f.deliver(t, batch(t, ids, map[string][]string{"text": {"first", "second"}}, recs...))
			got := reqs()
			if len(got) != 3 {
				t.Fatalf("%d requests, want 3 (the limited one twice)", len(got))
			}
			// Retry-After paused the channel: both sends after the 429
			// waited for it, the first for 1 s, the other for its slot
			// 20 ms later (50/s).
			if got, want := clock.slept(), []time.Duration{time.Second, time.Second + 20*time.Millisecond}; !slices.Equal(got, want) {
				t.Errorf("waits before the sends after the 429 %v, want %v (Retry-After said 1s)", got, want)
			}
			if string(got[2].body) != string(got[0].body) && string(got[1].body) != string(got[0].body) {
				t.Error("the limited message was not sent again")
			}
			for _, id := range ids {
				if f.out.Status(id) != "delivered" {
					t.Errorf("%s: %s", id, f.out.Status(id))
				}
			}
			if log := f.out.Log["a"]; len(log) != 2 || !strings.Contains(log[0].Error, tt.logWant) {
				t.Errorf("log of the limited message %+v; want its first error to say %q", log, tt.logWant)
			}
		})
	}
}

// fakeClock is a sink's clock (Sink.now and Sink.sleep) that stands still:
// sleep notes the wait it was asked for and returns at once. The pacing
// tests check the waits the sink asked for, not when a loaded machine got
// round to the sends.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 11, 14, 9, 22, 47, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) bool {
	c.mu.Lock()
	c.sleeps = append(c.sleeps, d)
	c.mu.Unlock()
	return ctx.Err() == nil
}

// slept returns the waits asked for so far, shortest first.
func (c *fakeClock) slept() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := slices.Clone(c.sleeps)
	slices.Sort(out)
	return out
}

// Messages are paced at one per second per channel (per webhook URL); other
// channels do not wait. Three messages written at one instant: those of one
// channel get the slots 0, 1 s and 2 s (the first goes at once, the others
// ask to wait 1 s and 2 s); those of three channels wait for nothing.
func TestPacing(t *testing.T) {
	paced := []time.Duration{time.Second, 2 * time.Second}
	tests := []struct {
		name     string
		mode     func(*httptest.Server) map[string]any
		extra    map[string]any
		channels []string        // rendered channel per message; nil: the configured one
		waits    []time.Duration // asked for before the sends, shortest first
	}{
		{"three messages to one channel", apiMode, nil, nil, paced},
		{"three messages to one channel, concurrency 16", apiMode, map[string]any{"concurrency": 16}, nil, paced},
		{"three messages to one webhook URL", webhookMode, nil, nil, paced},
		{"three messages to three channels", apiMode, nil, []string{"C1", "C2", "C3"}, nil},
		{"three channels rendered the same are one", apiMode, nil, []string{"C1", "C1 ", "C1"}, paced},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, reqs := server(t, func(_ int, r request, w http.ResponseWriter) { ok(w, r) })
			// The default rate_limit: Slack's one message per second.
			cfg := merge(tt.mode(srv), map[string]any{"rate_limit": nil}, tt.extra)
			tpl := map[string][]string{"text": {"1", "2", "3"}}
			var templates []string
			if tt.channels != nil {
				tpl["channel"] = tt.channels
				templates = []string{"channel"}
			}
			clock := newFakeClock()
			f := configureSink(t, &Sink{now: clock.Now, sleep: clock.Sleep}, cfg, append(templates, "text")...)
			ids, recs := records(3)
			f.deliver(t, batch(t, ids, tpl, recs...))
			if got := reqs(); len(got) != 3 {
				t.Fatalf("%d requests, want 3", len(got))
			}
			if got := clock.slept(); !slices.Equal(got, tt.waits) {
				t.Errorf("waits before the sends %v, want %v", got, tt.waits)
			}
			for _, id := range ids {
				if st, log := f.out.Status(id), f.out.Log[id]; st != "delivered" || len(log) != 1 {
					t.Errorf("%s: %s after %d attempts; waiting for the limiter is not an attempt", id, st, len(log))
				}
			}
		})
	}
}

// A channel that renders empty sends that record to the dead letter and
// lets the others through.
func TestEmptyChannelGoesToDeadLetter(t *testing.T) {
	srv, reqs := server(t, func(_ int, r request, w http.ResponseWriter) { ok(w, r) })
	f := configure(t, merge(apiMode(srv), map[string]any{"channel": "{{ metadata.slack_channel }}"}), "channel")
	f.deliver(t, batch(t, []string{"a", "b"}, map[string][]string{"channel": {"C1", "  "}}, `{"x":1}`, `{"x":2}`))
	if n := len(reqs()); n != 1 || f.out.Status("a") != "delivered" || f.out.Status("b") != "dead" {
		t.Fatalf("%d requests; a %s, b %s", n, f.out.Status("a"), f.out.Status("b"))
	}
	if log := f.out.Log["b"]; len(log) != 1 || !strings.Contains(log[0].Error, "channel rendered empty") {
		t.Fatalf("log of b %+v", log)
	}
}

// The token and the webhook URL (whose last segment is the secret) appear
// nowhere: not in errors, the delivery log, the sink's log lines, the
// endpoint or the stored payload, whatever goes wrong.
func TestSecretsNeverShown(t *testing.T) {
	echo := func(status int) func(int, request, http.ResponseWriter) {
		return func(_ int, r request, w http.ResponseWriter) {
			// A misbehaving proxy that echoes what it got.
			w.WriteHeader(status)
			fmt.Fprintf(w, "no_service %s %s %v", r.path, r.body, r.header)
		}
	}
	tests := []struct {
		name   string
		mode   func(*httptest.Server) map[string]any
		answer func(int, request, http.ResponseWriter)
		closed bool           // the server is down
		extra  map[string]any // more config
		want   string         // somewhere in what is shown
	}{
		{name: "chat.postMessage echoing the request", mode: apiMode, answer: echo(500), want: "chat.postMessage: 500 no_service"},
		{name: "chat.postMessage invalid_auth", mode: apiMode, answer: func(_ int, _ request, w http.ResponseWriter) { apiError(w, 200, "invalid_auth") }, want: "invalid_auth"},
		{name: "chat.postMessage down", mode: apiMode, closed: true, want: "/api/chat.postMessage: dial tcp"},
		{name: "chat.postMessage timing out", mode: apiMode, extra: map[string]any{"timeout": "100ms"}, answer: func(_ int, _ request, w http.ResponseWriter) { time.Sleep(300 * time.Millisecond) }, want: "timed out after 100ms"},
		{name: "incoming webhook echoing the request", mode: webhookMode, answer: echo(404), want: "incoming webhook: 404 no_service"},
		{name: "incoming webhook gone", mode: webhookMode, answer: func(_ int, _ request, w http.ResponseWriter) { webhookError(w, 410, "channel_is_archived") }, want: "/services/T00000000/B00000000/***"},
		{name: "incoming webhook down", mode: webhookMode, closed: true, want: "/services/T00000000/B00000000/***: dial tcp"},
		{name: "incoming webhook timing out", mode: webhookMode, extra: map[string]any{"timeout": "100ms"}, answer: func(_ int, _ request, w http.ResponseWriter) { time.Sleep(300 * time.Millisecond) }, want: "timed out after 100ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			answer := tt.answer
			if answer == nil {
				answer = func(int, request, http.ResponseWriter) {}
			}
			srv, _ := server(t, answer)
			if tt.closed {
				srv.Close()
			}
			f := configure(t, merge(tt.mode(srv), tt.extra))
			ids, recs := records(2)
			b := batch(t, ids, nil, recs...)

			var shown []string
			for i := range ids {
				d, err := f.s.Prepare(b, i)
				if err != nil {
					t.Fatal(err)
				}
				shown = append(shown, d.Endpoint, string(d.Payload))
			}
			f.deliver(t, b)
			for _, id := range ids {
				if f.out.Status(id) != "dead" {
					t.Errorf("%s: %s, want dead", id, f.out.Status(id))
				}
				for _, a := range f.out.Log[id] {
					shown = append(shown, a.Error, string(a.Response))
				}
			}
			shown = append(shown, f.log.String())
			all := strings.Join(shown, "\n")
			if !strings.Contains(all, tt.want) {
				t.Errorf("%q is shown nowhere; shown:\n%s", tt.want, all)
			}
			for _, secret := range []string{token, hookSecret, srv.URL + hookPath} {
				if strings.Contains(all, secret) {
					t.Errorf("%q shown:\n%s", secret, all)
				}
			}
			if tt.name == "chat.postMessage echoing the request" && !strings.Contains(all, "Bearer [redacted]") {
				t.Errorf("the echoed token was not replaced:\n%s", all)
			}
		})
	}
}

// Configure says what is wrong, naming the attribute, and never repeats a
// secret.
func TestConfigureRejects(t *testing.T) {
	t.Setenv("PIPELINE_ALLOW_PRIVATE_NETWORKS", "")
	hook := map[string]any{"webhook_url": "https://hooks.slack.com" + hookPath}
	api := map[string]any{"token": token, "channel": "C0000000001"}
	tests := []struct {
		name   string
		base   map[string]any
		change map[string]any
		want   string
	}{
		{"both modes", hook, map[string]any{"token": token}, "webhook_url and token are both set"},
		{"neither mode", map[string]any{}, nil, "neither webhook_url nor token is set"},
		{"channel alone", map[string]any{"channel": "C1"}, nil, "neither webhook_url nor token is set"},
		{"channel with webhook_url", hook, map[string]any{"channel": "C1"}, "channel: an incoming webhook posts to the channel it was created for"},
		{"token without channel", api, map[string]any{"channel": nil}, "channel: required with token"},
		{"token that is a URL", api, map[string]any{"token": "https://hooks.slack.com" + hookPath}, "token: looks like a URL"},
		{"token with a space", api, map[string]any{"token": "xoxb-1 " + hookSecret}, "token: contains spaces"},
		{"api_url with another scheme", api, map[string]any{"api_url": "ftp://slack.com/api"}, "api_url: netguard: URL not allowed: unsupported scheme"},
		{"api_url without a scheme", api, map[string]any{"api_url": "slack.com/api"}, "api_url: netguard: URL not allowed: URL has no scheme"},
		{"api_url without a host", api, map[string]any{"api_url": "https:///api"}, "api_url: netguard: URL not allowed: URL has no host"},
		{"api_url with a query", api, map[string]any{"api_url": "https://slack.com/api?x=1"}, "api_url: must be a base URL"},
		{"api_url with credentials", api, map[string]any{"api_url": "https://u:p@slack.com/api"}, "api_url: must be a base URL"},
		{"api_url on a private network", api, map[string]any{"api_url": "http://10.1.2.3/api"}, "api_url: netguard: refusing to connect to 10.1.2.3: private network"},
		{"api_url over http with https_only", api, map[string]any{"api_url": "http://slack.example/api", "https_only": true}, "api_url: netguard: URL not allowed: https_only"},
		{"webhook_url without a scheme", map[string]any{"webhook_url": "hooks.slack.com" + hookPath}, nil, "webhook_url: netguard: URL not allowed: URL has no scheme"},
		{"webhook_url on loopback", map[string]any{"webhook_url": "http://127.0.0.1:8080" + hookPath}, nil, "webhook_url: netguard: refusing to connect to 127.0.0.1: loopback; set allow_private_networks = true"},
		{"webhook_url over http with https_only", map[string]any{"webhook_url": "http://hooks.slack.example" + hookPath, "https_only": true}, nil, "webhook_url: netguard: URL not allowed: https_only"},
		{"blocks not JSON", hook, map[string]any{"blocks": `[{"type": "section",}]`}, "blocks: not valid JSON"},
		{"blocks not an array", hook, map[string]any{"blocks": `{"type": "section"}`}, "blocks: must be a JSON array"},
		{"empty text", hook, map[string]any{"text": " "}, "text: must not be empty"},
		{"timeout", hook, map[string]any{"timeout": "soon"}, "timeout"},
		{"concurrency", hook, map[string]any{"concurrency": 0}, "concurrency must be at least 1"},
		{"rate_limit", hook, map[string]any{"rate_limit": "fast"}, "rate_limit: rate \"fast\""},
		{"retry", api, map[string]any{"retry": map[string]any{"schedule": []string{"soon"}}}, "retry: retry.schedule[0]"},
		{"circuit_breaker", api, map[string]any{"circuit_breaker": map[string]any{"failures": 0}}, "circuit_breaker: failures"},
		{"a mistyped attribute", api, map[string]any{"concurrency": "many"}, "decode config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := merge(map[string]any{"text": "hi", "api_url": DefaultAPIURL, "timeout": "1s", "concurrency": 1, "rate_limit": "1/s",
				"allow_private_networks": false, "https_only": false}, tt.base, tt.change)
			data, _ := json.Marshal(cfg)
			err := (&Sink{}).Configure(context.Background(), sdk.Config{Name: "alerts", JSON: data})
			if err == nil {
				t.Fatal("Configure accepted it")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to say %q", err, tt.want)
			}
			for _, secret := range []string{token, hookSecret, "xoxb-1"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q shows %q", err, secret)
				}
			}
		})
	}
}

func TestConfigureAccepts(t *testing.T) {
	t.Setenv("PIPELINE_ALLOW_PRIVATE_NETWORKS", "")
	tests := []struct {
		name      string
		cfg       map[string]any
		templates []string
		mode      mode
		endpoint  string // of a record's delivery
		post      string
	}{
		{"incoming webhook", map[string]any{"webhook_url": "https://hooks.slack.com" + hookPath + "\n"}, nil, modeWebhook,
			"hooks.slack.com/services/T00000000/B00000000/***", "https://slack.com/api/chat.postMessage"},
		{"chat.postMessage", map[string]any{"token": token + "\n", "channel": "C0000000001"}, nil, modeAPI, "C0000000001", "https://slack.com/api/chat.postMessage"},
		{"chat.postMessage, templated channel", map[string]any{"token": token, "channel": "{{ metadata.slack_channel }}"}, []string{"channel"}, modeAPI, "C0000000009", "https://slack.com/api/chat.postMessage"},
		{"chat.postMessage, api_url with a slash", map[string]any{"token": token, "channel": "#alerts", "api_url": "https://slack.example/api/", "https_only": true}, nil, modeAPI, "#alerts", "https://slack.example/api/chat.postMessage"},
		{"empty text with blocks", map[string]any{"token": token, "channel": "#alerts", "text": "", "blocks": `[{"type":"divider"}]`}, nil, modeAPI, "#alerts", "https://slack.com/api/chat.postMessage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := merge(map[string]any{"text": "hi", "api_url": DefaultAPIURL, "timeout": "10s", "concurrency": 1, "rate_limit": "1/s"}, tt.cfg)
			data, _ := json.Marshal(cfg)
			s := &Sink{}
			if err := s.Configure(context.Background(), sdk.Config{Name: "alerts", JSON: data, Templates: tt.templates}); err != nil {
				t.Fatal(err)
			}
			defer s.Close(context.Background())
			if s.mode != tt.mode || s.postURL != tt.post {
				t.Errorf("mode %d, chat.postMessage at %q; want %d, %q", s.mode, s.postURL, tt.mode, tt.post)
			}
			if strings.ContainsAny(s.cfg.Token+s.cfg.WebhookURL, "\n ") {
				t.Error("the secret was not trimmed")
			}
			var tpl map[string][]string
			if slices.Contains(tt.templates, "channel") {
				tpl = map[string][]string{"channel": {"C0000000009"}}
			}
			d, err := s.Prepare(batch(t, []string{"r"}, tpl, `{"x":1}`), 0)
			if err != nil || d.Endpoint != tt.endpoint || d.ID != "r" {
				t.Errorf("Prepare = %+v, %v; want endpoint %q, id r", d, err, tt.endpoint)
			}
		})
	}
}

func TestInfo(t *testing.T) {
	info := (&Sink{}).Info()
	if info.Kind != sdk.KindSink || info.Type != "slack" {
		t.Fatalf("kind %s, type %s", info.Kind, info.Type)
	}
	attrs := map[string]sdk.Attribute{}
	for _, a := range info.Config {
		attrs[a.Name] = a
	}
	tests := []struct {
		name     string
		template bool
		required bool
		def      any
	}{
		{"webhook_url", false, false, nil},
		{"token", false, false, nil},
		{"channel", true, false, nil},
		{"text", true, true, nil},
		{"blocks", true, false, nil},
		{"api_url", false, false, DefaultAPIURL},
		{"timeout", false, false, "10s"},
		{"concurrency", false, false, 1},
		{"rate_limit", false, false, "1/s"},
		{"allow_private_networks", false, false, false},
		{"https_only", false, false, false},
	}
	for _, tt := range tests {
		a, ok := attrs[tt.name]
		if !ok {
			t.Errorf("no attribute %s", tt.name)
			continue
		}
		if a.Template != tt.template || a.Required != tt.required || !reflect.DeepEqual(a.Default, tt.def) {
			t.Errorf("%s: template %v, required %v, default %v; want %v, %v, %v", tt.name, a.Template, a.Required, a.Default, tt.template, tt.required, tt.def)
		}
	}
	for _, block := range []string{"retry", "circuit_breaker"} {
		if len(attrs[block].Nested) == 0 {
			t.Errorf("%s is not a nested block", block)
		}
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://hooks.slack.com/services/T0001/B0002/abcdefghijklmnopqrstuvwx", "hooks.slack.com/services/T0001/B0002/***"},
		{"https://hooks.slack.com/services/T0001/B0002/abcdefghijklmnopqrstuvwx/", "hooks.slack.com/services/T0001/B0002/***"},
		{"https://user:pw@hooks.example:8443/hook?key=sekrit#frag", "hooks.example:8443/***"},
		{"https://hooks.example", "hooks.example"},
		{"not a url", "<webhook url>"},
	}
	for _, tt := range tests {
		if got := redactURL(tt.in); got != tt.want {
			t.Errorf("redactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// The logged start of a response never holds a secret, not even a piece of
// one cut at the 4 KiB mark.
func TestReadBodyScrubsAcrossTheCut(t *testing.T) {
	s := &Sink{secrets: secretStrings("https://hooks.slack.com"+hookPath, token)}
	tests := []struct {
		name    string
		body    string
		wantLen int
	}{
		{"short", "echo " + token, len("echo [redacted]")},
		{"token across the cut", strings.Repeat("x", maxLogged-10) + token + strings.Repeat("y", 100), maxLogged},
		{"webhook secret across the cut", strings.Repeat("x", maxLogged-5) + hookSecret, maxLogged},
		{"long body without secrets", strings.Repeat("z", 3*maxLogged), maxLogged},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(s.readBody(strings.NewReader(tt.body)))
			if len(got) != tt.wantLen {
				t.Errorf("kept %d bytes, want %d", len(got), tt.wantLen)
			}
			for _, secret := range []string{token, hookSecret} {
				for n := 6; n <= len(secret); n++ {
					if strings.Contains(got, secret[:n]) {
						t.Fatalf("the first %d characters of a secret are in %q", n, got[max(0, len(got)-60):])
					}
				}
			}
		})
	}
}
