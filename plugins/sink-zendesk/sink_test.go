package sinkzendesk

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strconv"
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

const (
	email = "agent@acme.example"
	token = "tok_9f8e7d6c5b4a3210zz"
)

var basicAuth = "Basic " + base64.StdEncoding.EncodeToString([]byte(email+"/token:"+token))

// ---- a local Zendesk ----

// call is one request the fake received.
type call struct {
	method string
	path   string
	ids    []int64        // update_many's ids, or the single ticket's id
	ticket map[string]any // the body's ticket object
	at     time.Time
}

type fakeTicket struct {
	tags     []string
	groupID  int64
	priority string
	status   string
	notes    []note
}

type fakeJob struct {
	ids    []int64
	ticket map[string]any
	polls  int
	end    string
	done   bool
}

// fake is a Zendesk account that checks every request the way the API
// documents it: basic auth as {email}/token:{api_token}; PUT
// /api/v2/tickets/update_many.json?ids=… (1 to 100 distinct ids) and PUT
// /api/v2/tickets/{id}.json with a {"ticket": {…}} body that never sets
// "tags", and sends additional_tags / remove_tags only to update_many (the
// single-ticket endpoint ignores them); comments as internal notes
// ({"body", "public": false}); GET /api/v2/job_statuses/{id}.json, which
// goes queued → working → completed (or the job's end) with a result per
// ticket. A request that breaks a rule fails the test and gets a 400.
type fake struct {
	t   *testing.T
	srv *httptest.Server

	mu      sync.Mutex
	calls   []call
	tickets map[int64]*fakeTicket
	jobs    map[string]*fakeJob
	// missing tickets do not exist: 404 from the single-ticket endpoint,
	// an error result from a job, or a 404 for the whole update_many call
	// with missingAs404.
	missing      map[int64]bool
	missingAs404 bool
	// failing tickets are reported as failed by the job.
	failing map[int64]bool
	// jobEnds are the final states of the jobs in the order they are
	// created ("completed" once they run out).
	jobEnds []string
	// before runs first for request n (1-based); it may set response
	// headers, and answers the request itself by returning true.
	before func(n int, w http.ResponseWriter, r *http.Request) bool
}

func newFake(t *testing.T) *fake {
	f := &fake{t: t, tickets: map[int64]*fakeTicket{}, jobs: map[string]*fakeJob{}, missing: map[int64]bool{}, failing: map[int64]bool{}}
	f.srv = httptest.NewServer(f)
	t.Cleanup(f.srv.Close)
	return f
}

var singlePath = regexp.MustCompile(`^/api/v2/tickets/([0-9]+)\.json$`)
var jobPath = regexp.MustCompile(`^/api/v2/job_statuses/([0-9a-f]+)\.json$`)

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	data, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	n := len(f.calls) + 1
	f.calls = append(f.calls, call{method: r.Method, path: r.URL.Path, at: time.Now()})
	before := f.before
	f.mu.Unlock()
	if before != nil && before(n, w, r) {
		return
	}
	fail := func(format string, args ...any) {
		f.t.Errorf("request %d, %s %s: %s", n, r.Method, r.URL, fmt.Sprintf(format, args...))
		http.Error(w, `{"error":"InvalidEndpoint"}`, http.StatusBadRequest)
	}
	if got := r.Header.Get("Authorization"); got != basicAuth {
		fail("Authorization %q, want basic auth for %s/token", got, email)
		return
	}
	if user, pass, ok := r.BasicAuth(); !ok || user != email+"/token" || pass != token {
		fail("basic auth user %q", user)
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	switch {
	case r.Method == http.MethodPut && r.URL.Path == "/api/v2/tickets/update_many.json":
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil || len(q) != 1 || len(q["ids"]) != 1 {
			fail("query %q: want exactly ids=…", r.URL.RawQuery)
			return
		}
		var ids []int64
		for _, s := range strings.Split(q["ids"][0], ",") {
			id, err := strconv.ParseInt(s, 10, 64)
			if err != nil || id <= 0 || slices.Contains(ids, id) {
				fail("ids %q: want distinct positive ticket ids", q["ids"][0])
				return
			}
			ids = append(ids, id)
		}
		if len(ids) > 100 {
			fail("%d ids: update_many takes at most 100", len(ids))
			return
		}
		ticket, problem := checkBody(r, data, true)
		if problem != "" {
			fail("%s", problem)
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.calls[n-1].ids, f.calls[n-1].ticket = ids, ticket
		if f.missingAs404 {
			for _, id := range ids {
				if f.missing[id] {
					w.WriteHeader(http.StatusNotFound)
					io.WriteString(w, `{"error":"RecordNotFound","description":"Not found"}`)
					return
				}
			}
		}
		id := fmt.Sprintf("%032x", len(f.jobs)+1)
		end := "completed"
		if len(f.jobEnds) > 0 {
			end, f.jobEnds = f.jobEnds[0], f.jobEnds[1:]
		}
		f.jobs[id] = &fakeJob{ids: ids, ticket: ticket, end: end}
		writeJSON(w, map[string]any{"job_status": map[string]any{
			"id": id, "url": f.srv.URL + "/api/v2/job_statuses/" + id + ".json",
			"total": len(ids), "progress": nil, "status": "queued", "message": nil, "results": nil,
		}})
	case r.Method == http.MethodPut && singlePath.MatchString(r.URL.Path):
		id, _ := strconv.ParseInt(singlePath.FindStringSubmatch(r.URL.Path)[1], 10, 64)
		if r.URL.RawQuery != "" {
			fail("unexpected query %q", r.URL.RawQuery)
			return
		}
		ticket, problem := checkBody(r, data, false)
		if problem != "" {
			fail("%s", problem)
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.calls[n-1].ids, f.calls[n-1].ticket = []int64{id}, ticket
		if f.missing[id] {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":"RecordNotFound","description":"Not found"}`)
			return
		}
		f.apply(id, ticket)
		writeJSON(w, map[string]any{"ticket": map[string]any{"id": id, "tags": f.ticket(id).tags}})
	case r.Method == http.MethodGet && jobPath.MatchString(r.URL.Path):
		if len(data) != 0 || r.URL.RawQuery != "" {
			fail("a job status request takes no body or query")
			return
		}
		id := jobPath.FindStringSubmatch(r.URL.Path)[1]
		f.mu.Lock()
		defer f.mu.Unlock()
		job := f.jobs[id]
		if job == nil {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":"RecordNotFound","description":"Not found"}`)
			return
		}
		job.polls++
		js := map[string]any{"id": id, "url": "https://acme.zendesk.com/api/v2/job_statuses/" + id + ".json",
			"total": len(job.ids), "progress": 0, "status": "queued", "message": nil, "results": nil}
		switch {
		case job.polls == 2:
			js["status"] = "working"
		case job.polls >= 3 && job.end != "completed":
			js["status"], js["message"] = job.end, "Job was "+job.end
		case job.polls >= 3:
			var results []map[string]any
			for i, t := range job.ids {
				switch {
				case f.missing[t]:
					results = append(results, map[string]any{"id": t, "index": i, "error": "RecordNotFound", "details": "Ticket not found"})
				case f.failing[t]:
					results = append(results, map[string]any{"id": t, "index": i, "action": "update", "success": false,
						"status": "Failed", "errors": "TicketUpdateFailed", "details": "Status: closed prevents ticket update"})
				default:
					if !job.done {
						f.apply(t, job.ticket)
					}
					results = append(results, map[string]any{"id": t, "index": i, "action": "update", "success": true, "status": "Updated"})
				}
			}
			job.done = true
			js["status"], js["progress"], js["results"] = "completed", len(job.ids), results
			js["message"] = "Completed at 2025-11-14 08:00:00 +0000"
		}
		writeJSON(w, map[string]any{"job_status": js})
	default:
		fail("no such endpoint")
	}
}

// checkBody checks an update's body and returns its ticket object.
func checkBody(r *http.Request, data []byte, bulk bool) (map[string]any, string) {
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		return nil, fmt.Sprintf("Content-Type %q", ct)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil || len(top) != 1 || top["ticket"] == nil {
		return nil, fmt.Sprintf(`body %s: want {"ticket": {...}}`, data)
	}
	var ticket map[string]any
	dec := json.NewDecoder(bytes.NewReader(top["ticket"]))
	dec.UseNumber()
	if err := dec.Decode(&ticket); err != nil || len(ticket) == 0 {
		return nil, fmt.Sprintf("ticket object %s: want the properties to update", top["ticket"])
	}
	for k, v := range ticket {
		switch k {
		case "tags":
			return nil, `"tags" replaces every tag of the ticket; additional_tags / remove_tags keep the others`
		case "additional_tags", "remove_tags":
			if !bulk {
				return nil, k + " sent to the single-ticket endpoint, which ignores it"
			}
			list, ok := v.([]any)
			if !ok || len(list) == 0 {
				return nil, k + " must be a list of tags"
			}
			for _, t := range list {
				if s, ok := t.(string); !ok || s == "" || strings.ContainsAny(s, " \t") {
					return nil, fmt.Sprintf("%s holds %v", k, t)
				}
			}
		case "group_id":
			if n, ok := v.(json.Number); !ok || strings.ContainsAny(n.String(), ".eE-") {
				return nil, fmt.Sprintf("group_id %v is not an id", v)
			}
		case "priority":
			if !slices.Contains([]any{"low", "normal", "high", "urgent"}, v) {
				return nil, fmt.Sprintf("priority %v", v)
			}
		case "status":
			if !slices.Contains([]any{"new", "open", "pending", "hold", "solved", "closed"}, v) {
				return nil, fmt.Sprintf("status %v", v)
			}
		case "comment":
			c, ok := v.(map[string]any)
			if !ok || len(c) != 2 {
				return nil, fmt.Sprintf(`comment %v: want {"body": ..., "public": false}`, v)
			}
			if b, ok := c["body"].(string); !ok || b == "" {
				return nil, fmt.Sprintf("comment body %v", c["body"])
			}
			if c["public"] != false {
				return nil, fmt.Sprintf("comment public %v: an internal note is public: false", c["public"])
			}
		default:
			return nil, fmt.Sprintf("unexpected ticket property %q", k)
		}
	}
	return ticket, ""
}

func writeJSON(w http.ResponseWriter, v any) {
	data, _ := json.Marshal(v)
	w.Write(data)
}

// ticket returns a ticket's state; every ticket starts with the tags vip
// and old. Called with f.mu held.
func (f *fake) ticket(id int64) *fakeTicket {
	t := f.tickets[id]
	if t == nil {
		t = &fakeTicket{tags: []string{"vip", "old"}, priority: "normal", status: "open"}
		f.tickets[id] = t
	}
	return t
}

// apply makes a change the way Zendesk does. Called with f.mu held.
func (f *fake) apply(id int64, ticket map[string]any) {
	t := f.ticket(id)
	for k, v := range ticket {
		switch k {
		case "additional_tags":
			for _, tag := range v.([]any) {
				if !slices.Contains(t.tags, tag.(string)) {
					t.tags = append(t.tags, tag.(string))
				}
			}
		case "remove_tags":
			for _, tag := range v.([]any) {
				t.tags = slices.DeleteFunc(t.tags, func(s string) bool { return s == tag })
			}
		case "group_id":
			t.groupID, _ = v.(json.Number).Int64()
		case "priority":
			t.priority = v.(string)
		case "status":
			t.status = v.(string)
		case "comment":
			c := v.(map[string]any)
			t.notes = append(t.notes, note{Body: c["body"].(string), Public: c["public"].(bool)})
		}
	}
}

func (f *fake) snapshot() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fake) state(id int64) fakeTicket {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := *f.ticket(id)
	t.tags, t.notes = slices.Clone(t.tags), slices.Clone(t.notes)
	return t
}

// updates are the calls that update tickets (not polls), in order.
func updates(calls []call) []call {
	var out []call
	for _, c := range calls {
		if c.method == http.MethodPut {
			out = append(out, c)
		}
	}
	return out
}

// ---- the sink under test ----

// rec is one record: its id and the rendered ticket_id and comment.
type rec struct{ id, ticket, note string }

// batch builds the batch the engine would hand the sink: records with ids
// and the rendered template columns.
func batch(t *testing.T, withNote bool, recs ...rec) sdk.Batch {
	t.Helper()
	dec := arrowjson.NewDecoder(arrowjson.Options{})
	defer dec.Release()
	for i := range recs {
		if err := dec.Append([]byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	r := dec.Flush()
	fields := slices.Clone(r.Schema().Fields())
	cols := slices.Clone(r.Columns())
	add := func(name string, value func(rec) string) {
		b := array.NewStringBuilder(memory.DefaultAllocator)
		for _, x := range recs {
			b.Append(value(x))
		}
		fields = append(fields, arrow.Field{Name: name, Type: arrow.BinaryTypes.String, Nullable: true})
		cols = append(cols, b.NewArray())
	}
	add(sdk.IDColumn, func(x rec) string { return x.id })
	add(sdk.TemplateColumnPrefix+"ticket_id", func(x rec) string { return x.ticket })
	if withNote {
		add(sdk.TemplateColumnPrefix+"comment", func(x rec) string { return x.note })
	}
	return sdk.NewBatch(array.NewRecordBatch(arrow.NewSchema(fields, nil), cols, r.NumRows()))
}

// records makes n records for tickets first, first+1, ...
func records(n int, first int64) []rec {
	out := make([]rec, n)
	for i := range out {
		id := first + int64(i)
		out[i] = rec{id: fmt.Sprintf("row_%d", id), ticket: strconv.FormatInt(id, 10), note: fmt.Sprintf("Churn risk for ticket %d", id)}
	}
	return out
}

// configure makes a sink over an in-memory outbox that talks to f, with
// fast retries and polls and the private-network opt-in (f is on loopback).
func configure(t *testing.T, f *fake, cfg map[string]any, log *slog.Logger) (*Sink, *delivery.MemoryOutbox) {
	t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s, out := &Sink{log: log}, delivery.NewMemoryOutbox()
	configureSink(t, s, f, cfg, out)
	return s, out
}

// configureSink is configure for a sink the test has prepared (given a
// clock, say), over the outbox out.
func configureSink(t *testing.T, s *Sink, f *fake, cfg map[string]any, out sdk.Outbox) {
	t.Helper()
	full := map[string]any{"email": email, "api_token": token, "ticket_id": "{{ metadata.ticket_id }}",
		"timeout": "2s", "concurrency": 4, "poll_interval": "10ms", "poll_timeout": "5s",
		"allow_private_networks": true, "https_only": false,
		"retry": map[string]any{"schedule": []string{"0s", "10ms", "10ms", "10ms"}}}
	if f != nil {
		full["api_url"] = f.srv.URL
	}
	for k, v := range cfg {
		if v == nil {
			delete(full, k)
		} else {
			full[k] = v
		}
	}
	templates := []string{"ticket_id"}
	if c, _ := full["comment"].(string); strings.Contains(c, "{{") {
		templates = append(templates, "comment")
	}
	data, _ := json.Marshal(full)
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if err := s.Configure(context.Background(), sdk.Config{Name: "tickets", JSON: data, Templates: templates, Outbox: out}); err != nil {
		t.Fatal(err)
	}
}

// fakeClock is a sink's clock (Sink.now and Sink.sleep) in which time
// passes only by sleeping: sleep notes the wait it was asked for, moves the
// clock on by it and returns at once. What the rate-limit tests check is
// the waits the sink asked for, not how long a loaded machine took. (The
// clock is shared by whoever sleeps: meant for sends one at a time.)
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

// Sleep is Sink.sleep; a wait of 0 or less is no wait, and not noted.
func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if d > 0 {
		c.mu.Lock()
		c.sleeps = append(c.sleeps, d)
		c.now = c.now.Add(d)
		c.mu.Unlock()
	}
	return ctx.Err()
}

// slept returns the waits asked for so far, in order.
func (c *fakeClock) slept() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sleeps)
}

// configureClocked is configure with a fake clock and a MemoryOutbox (its Results are what the Deliverer recorded).
func configureClocked(t *testing.T, f *fake, cfg map[string]any) (*Sink, *delivery.MemoryOutbox, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	s := &Sink{now: clock.Now, sleep: clock.Sleep}
	out := delivery.NewMemoryOutbox()
	configureSink(t, s, f, cfg, out)
	return s, out, clock
}

// deliver writes the batch and waits until nothing is pending.
func deliver(t *testing.T, s *Sink, b sdk.Batch) {
	t.Helper()
	if err := s.Write(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func ids(calls []call) [][]int64 {
	out := make([][]int64, len(calls))
	for i, c := range calls {
		out[i] = c.ids
	}
	return out
}

// ---- tests ----

func TestUpdateManyAndJobResults(t *testing.T) {
	f := newFake(t)
	f.failing[12] = true
	s, out := configure(t, f, map[string]any{"add_tags": []string{"churn_risk"}, "remove_tags": []string{"old"},
		"group_id": 360001234567, "priority": "high", "status": "pending"}, nil)
	deliver(t, s, batch(t, false, records(3, 11)...))

	calls := f.snapshot()
	var kinds []string
	for _, c := range calls {
		kinds = append(kinds, c.method+" "+c.path)
	}
	update := "PUT /api/v2/tickets/update_many.json"
	poll := "GET /api/v2/job_statuses/" + fmt.Sprintf("%032x", 1) + ".json"
	if want := []string{update, poll, poll, poll}; !reflect.DeepEqual(kinds, want) {
		t.Fatalf("requests:\n%s\nwant one update_many, then polls until the job completed (queued, working, completed):\n%s",
			strings.Join(kinds, "\n"), strings.Join(want, "\n"))
	}
	if !reflect.DeepEqual(calls[0].ids, []int64{11, 12, 13}) {
		t.Errorf("ids %v", calls[0].ids)
	}
	wantTicket := map[string]any{"additional_tags": []any{"churn_risk"}, "remove_tags": []any{"old"},
		"group_id": json.Number("360001234567"), "priority": "high", "status": "pending"}
	if !reflect.DeepEqual(calls[0].ticket, wantTicket) {
		t.Errorf("ticket object %v\nwant %v", calls[0].ticket, wantTicket)
	}

	for _, tc := range []struct {
		row    string
		ticket int64
		status string
		tags   []string
	}{
		{"row_11", 11, "delivered", []string{"vip", "churn_risk"}},
		{"row_12", 12, "dead", []string{"vip", "old"}},
		{"row_13", 13, "delivered", []string{"vip", "churn_risk"}},
	} {
		if got := out.Status(tc.row); got != tc.status {
			t.Errorf("%s: %s, want %s", tc.row, got, tc.status)
		}
		if log := out.Log[tc.row]; len(log) != 1 {
			t.Errorf("%s: %d attempts, want 1: %+v", tc.row, len(log), log)
		}
		st := f.state(tc.ticket)
		if !reflect.DeepEqual(st.tags, tc.tags) {
			t.Errorf("ticket %d tags %v, want %v (existing tags are kept)", tc.ticket, st.tags, tc.tags)
		}
		if tc.status == "delivered" && (st.groupID != 360001234567 || st.priority != "high" || st.status != "pending") {
			t.Errorf("ticket %d: %+v", tc.ticket, st)
		}
	}
	if log := out.Log["row_12"]; len(log) == 1 && (!strings.Contains(log[0].Error, "closed prevents ticket update") || !strings.Contains(string(log[0].Response), `"id":12`)) {
		t.Errorf("the failed ticket's log says %q, response %s", log[0].Error, log[0].Response)
	}
	if log := out.Log["row_11"]; len(log) == 1 && (log[0].StatusCode != 200 || log[0].Error != "" || !strings.Contains(string(log[0].Response), `"id":11`)) {
		t.Errorf("row_11 log %+v", log[0])
	}
}

func TestBatchesOfAtMost100(t *testing.T) {
	cfg := map[string]any{"add_tags": []string{"churn_risk"}, "status": "open"}

	t.Run("SendBatch splits 150 tickets into 100 and 50", func(t *testing.T) {
		f := newFake(t)
		s, _ := configure(t, f, cfg, nil)
		b := batch(t, false, records(150, 1001)...)
		ds := make([]sdk.Delivery, b.Len())
		for i := range ds {
			var err error
			if ds[i], err = s.Prepare(b, i); err != nil {
				t.Fatal(err)
			}
		}
		results := s.SendBatch(context.Background(), ds)
		if len(results) != 150 {
			t.Fatalf("%d results", len(results))
		}
		for i, r := range results {
			if r.Status != 200 || r.Err != nil {
				t.Fatalf("delivery %d: %+v", i, r)
			}
		}
		up := updates(f.snapshot())
		var sizes []int
		for _, c := range up {
			sizes = append(sizes, len(c.ids))
		}
		slices.Sort(sizes) // the two calls run in parallel
		if !reflect.DeepEqual(sizes, []int{50, 100}) {
			t.Fatalf("update_many calls of %v tickets, want 100 and 50", sizes)
		}
		seen := map[int64]bool{}
		for _, c := range up {
			for _, id := range c.ids {
				seen[id] = true
			}
		}
		if len(seen) != 150 {
			t.Errorf("%d distinct tickets updated", len(seen))
		}
		if st := f.state(1150); !slices.Contains(st.tags, "churn_risk") || st.status != "open" {
			t.Errorf("ticket 1150: %+v", st)
		}
	})

	t.Run("a ticket twice goes in separate calls", func(t *testing.T) {
		f := newFake(t)
		s, _ := configure(t, f, cfg, nil)
		b := batch(t, false, rec{id: "a", ticket: "5"}, rec{id: "b", ticket: "5"}, rec{id: "c", ticket: "6"})
		var ds []sdk.Delivery
		for i := range b.Len() {
			d, err := s.Prepare(b, i)
			if err != nil {
				t.Fatal(err)
			}
			ds = append(ds, d)
		}
		if ds[0].OrderKey != ds[1].OrderKey || ds[0].OrderKey == ds[2].OrderKey {
			t.Errorf("order keys %q %q %q: one per ticket", ds[0].OrderKey, ds[1].OrderKey, ds[2].OrderKey)
		}
		for i, r := range s.SendBatch(context.Background(), ds) {
			if r.Status != 200 || r.Err != nil {
				t.Errorf("delivery %d: %+v", i, r)
			}
		}
		got := map[string]bool{}
		for _, c := range updates(f.snapshot()) {
			got[fmt.Sprint(c.ids)] = true
		}
		if want := map[string]bool{"[5 6]": true, "[5]": true}; !reflect.DeepEqual(got, want) {
			t.Errorf("calls %v, want %v", got, want)
		}
	})

	t.Run("through the outbox", func(t *testing.T) {
		f := newFake(t)
		s, out := configure(t, f, cfg, nil)
		deliver(t, s, batch(t, false, records(150, 1001)...))
		up := updates(f.snapshot())
		total := 0
		for _, c := range up {
			if c.path != "/api/v2/tickets/update_many.json" || len(c.ids) > 100 {
				t.Errorf("%s with %d ids", c.path, len(c.ids))
			}
			total += len(c.ids)
		}
		// The delivery loop leases at most 64 deliveries at a time, so
		// the calls are smaller than 100 here, but still batched.
		if total != 150 || len(up) > 5 {
			t.Errorf("%d update calls for %d tickets: %v", len(up), total, ids(up))
		}
		for _, r := range records(150, 1001) {
			if out.Status(r.id) != "delivered" {
				t.Fatalf("%s: %s", r.id, out.Status(r.id))
			}
		}
	})
}

func TestNoteGoesAlone(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  map[string]any
		path string         // where each note goes
		rest map[string]any // the other properties of each ticket object
	}{
		{"note only: the single-ticket endpoint", map[string]any{"comment": "Churn risk {{ classifications.churn_risk.label }}"},
			"/api/v2/tickets/%d.json", map[string]any{}},
		{"note and status: the single-ticket endpoint", map[string]any{"comment": "{{ summary }}", "status": "pending"},
			"/api/v2/tickets/%d.json", map[string]any{"status": "pending"}},
		{"note and tags: update_many with one id", map[string]any{"comment": "{{ summary }}", "add_tags": []string{"churn_risk"}},
			"/api/v2/tickets/update_many.json", map[string]any{"additional_tags": []any{"churn_risk"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			s, out := configure(t, f, tc.cfg, nil)
			recs := records(3, 21)
			deliver(t, s, batch(t, true, recs...))
			up := updates(f.snapshot())
			if len(up) != 3 {
				t.Fatalf("%d update requests for 3 notes: %v", len(up), ids(up))
			}
			for _, c := range up {
				if len(c.ids) != 1 {
					t.Fatalf("a note went with other tickets: %v", c.ids)
				}
				id := c.ids[0]
				want := tc.path
				if strings.Contains(want, "%d") {
					want = fmt.Sprintf(want, id)
				}
				if c.path != want {
					t.Errorf("ticket %d went to %s, want %s", id, c.path, want)
				}
				wantTicket := map[string]any{"comment": map[string]any{"body": fmt.Sprintf("Churn risk for ticket %d", id), "public": false}}
				for k, v := range tc.rest {
					wantTicket[k] = v
				}
				if !reflect.DeepEqual(c.ticket, wantTicket) {
					t.Errorf("ticket object %v\nwant %v", c.ticket, wantTicket)
				}
				if st := f.state(id); len(st.notes) != 1 || st.notes[0].Public {
					t.Errorf("ticket %d notes %+v", id, st.notes)
				}
			}
			for _, r := range recs {
				if out.Status(r.id) != "delivered" {
					t.Errorf("%s: %s", r.id, out.Status(r.id))
				}
			}
		})
	}

	t.Run("mixed with changes that batch", func(t *testing.T) {
		f := newFake(t)
		plain, _ := configure(t, f, map[string]any{"status": "solved"}, nil)
		noted, _ := configure(t, f, map[string]any{"status": "solved", "comment": "{{ summary }}"}, nil)
		b := batch(t, true, records(4, 31)...)
		var ds []sdk.Delivery
		for i := range 4 {
			p := plain
			if i%2 == 1 {
				p = noted
			}
			d, err := p.Prepare(b, i)
			if err != nil {
				t.Fatal(err)
			}
			ds = append(ds, d)
		}
		for i, r := range plain.SendBatch(context.Background(), ds) {
			if r.Status != 200 || r.Err != nil {
				t.Errorf("delivery %d: %+v", i, r)
			}
		}
		got := map[string]bool{}
		for _, c := range updates(f.snapshot()) {
			got[fmt.Sprint(c.path, c.ids)] = true
		}
		want := map[string]bool{"/api/v2/tickets/update_many.json[31 33]": true, "/api/v2/tickets/32.json[32]": true, "/api/v2/tickets/34.json[34]": true}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("requests %v, want %v", got, want)
		}
	})
}

func TestRetryAfterIsHonoured(t *testing.T) {
	f := newFake(t)
	f.before = func(n int, w http.ResponseWriter, _ *http.Request) bool {
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"error":"APIRateLimitExceeded"}`)
			return true
		}
		return false
	}
	s, out, clock := configureClocked(t, f, map[string]any{"add_tags": []string{"churn_risk"}})
	deliver(t, s, batch(t, false, records(2, 41)...))
	// The first call got the 429; the retries carry each ticket once
	// more. They usually go in one call; under load the deliverer may find
	// one ready before the other and send two.
	up := updates(f.snapshot())
	if len(up) < 2 || len(up) > 3 {
		t.Fatalf("update_many calls %v, want the 429'd one, then a retry of each ticket", ids(up))
	}
	var retried []int64
	for _, c := range up[1:] {
		retried = append(retried, c.ids...)
	}
	if slices.Sort(retried); !slices.Equal(retried, []int64{41, 42}) {
		t.Fatalf("retried tickets %v, want each of 41 and 42 once", retried)
	}
	// Retry-After paused the account: the retry waited 1 s for it (then
	// its job was polled every poll_interval, 10 ms).
	got := clock.slept()
	if len(got) < 2 || got[0] != time.Second {
		t.Errorf("waits %v: want 1s for Retry-After before the retry, then the job's polls", got)
	}
	for _, d := range got[1:] {
		if d != time.Second && d != 10*time.Millisecond {
			t.Errorf("waits %v: want only 1s (Retry-After) and 10ms (polls)", got)
			break
		}
	}
	for _, r := range records(2, 41) {
		if log := out.Log[r.id]; out.Status(r.id) != "delivered" || len(log) != 2 || log[0].StatusCode != 429 {
			t.Errorf("%s: %s, log %+v", r.id, out.Status(r.id), log)
		}
		// And the retry was due 1 s after the 429, not after the
		// schedule's 10 ms.
		res := out.Results(r.id)
		if len(res) == 0 {
			t.Errorf("%s: no result recorded", r.id)
			continue
		}
		if due := res[0].Next.Sub(res[0].Attempt.At.Add(res[0].Attempt.Latency)); res[0].Outcome != sdk.Retry || due != time.Second {
			t.Errorf("%s: outcome %v, due again %v after the 429; want a retry 1s after it (Retry-After)", r.id, res[0].Outcome, due)
		}
	}
}

func TestRateLimitHeadersSlowDown(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers map[string]string
		waits   []time.Duration // asked for before the second request
	}{
		// 1 left of 700, the window resets in 1 s: the last one in 1 s.
		{"account quota under 10%", map[string]string{"X-Rate-Limit": "700", "X-Rate-Limit-Remaining": "1", "RateLimit-Reset": "1"},
			[]time.Duration{time.Second}},
		// 2 left of 100 for 2 s: one a second.
		{"endpoint quota under 10%", map[string]string{"Zendesk-RateLimit-Tickets-Update": "total=100; remaining=2; resets=2"},
			[]time.Duration{time.Second}},
		{"plenty left", map[string]string{"X-Rate-Limit": "700", "X-Rate-Limit-Remaining": "650", "RateLimit-Reset": "30"},
			nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			f.before = func(n int, w http.ResponseWriter, _ *http.Request) bool {
				if n == 1 {
					for k, v := range tc.headers {
						w.Header().Set(k, v)
					}
				}
				return false
			}
			s, out, clock := configureClocked(t, f, map[string]any{"comment": "{{ summary }}", "concurrency": 1})
			deliver(t, s, batch(t, true, records(2, 51)...))
			up := updates(f.snapshot())
			if len(up) != 2 {
				t.Fatalf("%d requests", len(up))
			}
			if got := clock.slept(); !slices.Equal(got, tc.waits) {
				t.Errorf("waits before the second request %v, want %v", got, tc.waits)
			}
			for _, r := range records(2, 51) {
				if out.Status(r.id) != "delivered" {
					t.Errorf("%s: %s", r.id, out.Status(r.id))
				}
			}
		})
	}
}

func TestMissingTicketIsDead(t *testing.T) {
	for _, tc := range []struct {
		name         string
		cfg          map[string]any
		withNote     bool
		missingAs404 bool
		wantLog      string
	}{
		{"single-ticket endpoint answers 404", map[string]any{"comment": "{{ summary }}"}, true, false, "404"},
		{"the job reports the ticket missing", map[string]any{"add_tags": []string{"x"}}, false, false, "RecordNotFound"},
		{"update_many answers 404: tickets are tried one by one", map[string]any{"status": "open"}, false, true, "404"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			f.missing[62] = true
			f.missingAs404 = tc.missingAs404
			s, out := configure(t, f, tc.cfg, nil)
			deliver(t, s, batch(t, tc.withNote, records(3, 61)...))
			for _, r := range records(3, 61) {
				want := "delivered"
				if r.id == "row_62" {
					want = "dead"
				}
				if got := out.Status(r.id); got != want {
					t.Errorf("%s: %s, want %s", r.id, got, want)
				}
				if n := len(out.Log[r.id]); n != 1 {
					t.Errorf("%s: %d attempts, want 1", r.id, n)
				}
			}
			if log := out.Log["row_62"]; len(log) == 1 && !strings.Contains(log[0].Error, tc.wantLog) {
				t.Errorf("log %+v, want %q", log[0], tc.wantLog)
			}
			if st := f.state(61); st.status != "open" && len(st.notes) == 0 && !slices.Contains(st.tags, "x") {
				t.Errorf("ticket 61 untouched: %+v", st)
			}
		})
	}
}

func TestTransientFailuresAreRetried(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    map[string]any
		setup  func(f *fake)
		status string
		tries  int
	}{
		{"job killed", map[string]any{"add_tags": []string{"x"}}, func(f *fake) { f.jobEnds = []string{"killed"} }, "delivered", 2},
		{"job failed", map[string]any{"add_tags": []string{"x"}}, func(f *fake) { f.jobEnds = []string{"failed"} }, "delivered", 2},
		{"409 conflict on a ticket", map[string]any{"status": "solved"}, func(f *fake) {
			f.before = func(n int, w http.ResponseWriter, _ *http.Request) bool {
				if n == 1 {
					w.WriteHeader(http.StatusConflict)
					return true
				}
				return false
			}
		}, "delivered", 2},
		{"503", map[string]any{"status": "solved"}, func(f *fake) {
			f.before = func(n int, w http.ResponseWriter, _ *http.Request) bool {
				if n == 1 {
					w.WriteHeader(http.StatusServiceUnavailable)
					return true
				}
				return false
			}
		}, "delivered", 2},
		{"422 is not retried", map[string]any{"status": "solved"}, func(f *fake) {
			f.before = func(_ int, w http.ResponseWriter, _ *http.Request) bool {
				w.WriteHeader(http.StatusUnprocessableEntity)
				io.WriteString(w, `{"error":"RecordInvalid","description":"Record validation errors"}`)
				return true
			}
		}, "dead", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			tc.setup(f)
			s, out := configure(t, f, tc.cfg, nil)
			deliver(t, s, batch(t, false, rec{id: "row_71", ticket: "71"}))
			if got, n := out.Status("row_71"), len(out.Log["row_71"]); got != tc.status || n != tc.tries {
				t.Fatalf("%s after %d attempts, want %s after %d: %+v", got, n, tc.status, tc.tries, out.Log["row_71"])
			}
		})
	}
}

func TestCredentialsNeverLeak(t *testing.T) {
	secrets := []string{token, email, strings.TrimPrefix(basicAuth, "Basic ")}
	echo := func(n int, w http.ResponseWriter, r *http.Request) bool {
		// A hostile or buggy server that repeats the credentials.
		user, pass, _ := r.BasicAuth()
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"error":"Couldn't authenticate you as %s:%s (%s)"}`, user, pass, r.Header.Get("Authorization"))
		return true
	}
	for _, tc := range []struct {
		name   string
		cfg    map[string]any
		before func(int, http.ResponseWriter, *http.Request) bool
		down   bool
	}{
		{"401 echoing the credentials", map[string]any{"status": "open"}, echo, false},
		{"job result echoing them", map[string]any{"add_tags": []string{"x"}}, func(n int, w http.ResponseWriter, r *http.Request) bool {
			if r.Method != http.MethodGet {
				return false
			}
			writeJSON(w, map[string]any{"job_status": map[string]any{"id": "1", "status": "completed", "results": []any{
				map[string]any{"id": 81, "success": false, "errors": "bad token " + token + " for " + email}}}})
			return true
		}, false},
		{"server down", map[string]any{"status": "open"}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFake(t)
			f.before = tc.before
			var logs bytes.Buffer
			cfg := tc.cfg
			if tc.down {
				f.srv.Close()
			}
			s, out := configure(t, f, cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
			deliver(t, s, batch(t, false, rec{id: "row_81", ticket: "81"}))
			if out.Status("row_81") != "dead" {
				t.Fatalf("status %s", out.Status("row_81"))
			}
			var text strings.Builder
			for _, a := range out.Log["row_81"] {
				fmt.Fprintf(&text, "%s\n%s\n", a.Error, a.Response)
			}
			text.WriteString(logs.String())
			if logs.Len() == 0 || len(out.Log["row_81"]) == 0 {
				t.Fatal("nothing was logged")
			}
			for _, sec := range secrets {
				if strings.Contains(text.String(), sec) {
					t.Fatalf("%q leaked:\n%s", sec, text.String())
				}
			}
		})
	}
}

func TestTicketID(t *testing.T) {
	f := newFake(t)
	s, _ := configure(t, f, map[string]any{"status": "open"}, nil)
	for _, tc := range []struct {
		rendered string
		want     int64 // 0: a Prepare error
	}{
		{"42", 42}, {" 7 ", 7}, {"360001234567", 360001234567},
		{"", 0}, {"0", 0}, {"-3", 0}, {"+3", 0}, {"1.5", 0}, {"12 34", 0}, {"abc", 0}, {"99999999999999999999", 0},
	} {
		t.Run(strconv.Quote(tc.rendered), func(t *testing.T) {
			d, err := s.Prepare(batch(t, false, rec{id: "row_9", ticket: tc.rendered}), 0)
			if tc.want == 0 {
				if err == nil || !strings.Contains(err.Error(), "row_9") || !strings.Contains(err.Error(), "ticket_id") {
					t.Fatalf("Prepare: %v; want an error naming ticket_id and the record", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var p payload
			if err := json.Unmarshal(d.Payload, &p); err != nil || p.TicketID != tc.want {
				t.Fatalf("payload %s (%v)", d.Payload, err)
			}
			if d.ID != "row_9" || d.Endpoint != f.srv.URL || p.Base != f.srv.URL {
				t.Errorf("delivery %+v: the endpoint is the account's base URL", d)
			}
		})
	}

	t.Run("Write names the record", func(t *testing.T) {
		s, out := configure(t, f, map[string]any{"status": "open"}, nil)
		err := s.Write(context.Background(), batch(t, false, rec{id: "row_1", ticket: "1"}, rec{id: "row_2", ticket: "n/a"}))
		if err == nil || !strings.Contains(err.Error(), "row_2") {
			t.Fatalf("Write: %v", err)
		}
		if st, _ := out.Pending(context.Background()); st.Pending != 0 {
			t.Errorf("%d deliveries stored from a batch that failed", st.Pending)
		}
	})
}

func TestConfigure(t *testing.T) {
	t.Setenv("PIPELINE_ALLOW_PRIVATE_NETWORKS", "")
	base := map[string]any{"subdomain": "acme", "email": email, "api_token": token, "ticket_id": "{{ metadata.ticket_id }}",
		"add_tags": []string{"churn_risk"}, "timeout": "1s", "concurrency": 1, "poll_interval": "1s", "poll_timeout": "1m",
		"allow_private_networks": false}
	run := func(change map[string]any) (*Sink, error) {
		cfg := map[string]any{}
		for k, v := range base {
			cfg[k] = v
		}
		for k, v := range change {
			if v == nil {
				delete(cfg, k)
			} else {
				cfg[k] = v
			}
		}
		var templates []string
		for _, attr := range []string{"ticket_id", "comment"} {
			if v, _ := cfg[attr].(string); strings.Contains(v, "{{") {
				templates = append(templates, attr)
			}
		}
		data, _ := json.Marshal(cfg)
		s := &Sink{log: slog.New(slog.DiscardHandler)}
		return s, s.Configure(context.Background(), sdk.Config{JSON: data, Templates: templates})
	}

	t.Run("accepted", func(t *testing.T) {
		for _, tc := range []struct {
			change map[string]any
			base   string
		}{
			{nil, "https://acme.zendesk.com"},
			{map[string]any{"subdomain": "Acme"}, "https://acme.zendesk.com"},
			{map[string]any{"subdomain": nil, "api_url": "https://zendesk-proxy.example/acme/"}, "https://zendesk-proxy.example/acme"},
			{map[string]any{"add_tags": nil, "comment": "Checked by the pipeline"}, "https://acme.zendesk.com"},
		} {
			s, err := run(tc.change)
			if err != nil {
				t.Fatalf("%v: %v", tc.change, err)
			}
			if s.base != tc.base {
				t.Errorf("%v: base %s, want %s", tc.change, s.base, tc.base)
			}
		}
	})

	for _, tc := range []struct {
		name   string
		change map[string]any
		want   string
	}{
		{"missing email", map[string]any{"email": nil}, "email"},
		{"blank api_token", map[string]any{"api_token": " "}, "api_token"},
		{"no action", map[string]any{"add_tags": nil}, "no action"},
		{"empty lists are no action", map[string]any{"add_tags": []string{}, "remove_tags": []string{}}, "no action"},
		{"bad priority", map[string]any{"priority": "critical"}, "priority"},
		{"bad status", map[string]any{"status": "resolved"}, "status"},
		{"capitalised status", map[string]any{"status": "Open"}, "status"},
		{"no account", map[string]any{"subdomain": nil}, "subdomain"},
		{"host for subdomain", map[string]any{"subdomain": "acme.zendesk.com"}, "subdomain"},
		{"credentials in api_url", map[string]any{"api_url": "https://me:pw@zendesk-proxy.example"}, "api_url"},
		{"plain http api_url", map[string]any{"api_url": "http://zendesk-proxy.example"}, "api_url"},
		{"loopback api_url", map[string]any{"api_url": "https://127.0.0.1:8443"}, "allow_private_networks"},
		{"https_only", map[string]any{"api_url": "http://127.0.0.1:8443", "allow_private_networks": true, "https_only": true}, "https_only"},
		{"tag with a space", map[string]any{"add_tags": []string{"churn risk"}}, "add_tags"},
		{"tag added and removed", map[string]any{"remove_tags": []string{"churn_risk"}}, "remove_tags"},
		{"fractional group_id", map[string]any{"group_id": 1.5}, "group_id"},
		{"zero group_id", map[string]any{"group_id": 0}, "group_id"},
		{"constant ticket_id", map[string]any{"ticket_id": "abc"}, "ticket_id"},
		{"blank comment", map[string]any{"comment": "  "}, "comment"},
		{"timeout", map[string]any{"timeout": "soon"}, "timeout"},
		{"poll_interval", map[string]any{"poll_interval": "0s"}, "poll_interval"},
		{"poll_timeout", map[string]any{"poll_timeout": "100ms"}, "poll_timeout"},
		{"concurrency", map[string]any{"concurrency": 0}, "concurrency"},
		{"rate_limit", map[string]any{"rate_limit": "fast"}, "rate_limit"},
		{"retry", map[string]any{"retry": map[string]any{"schedule": []string{"soon"}}}, "retry"},
		{"circuit_breaker", map[string]any{"circuit_breaker": map[string]any{"failures": 0}}, "circuit_breaker"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := run(tc.change)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %s", err, tc.want)
			}
			if strings.Contains(err.Error(), token) || strings.Contains(err.Error(), strings.TrimPrefix(basicAuth, "Basic ")) {
				t.Fatalf("the error holds the token: %v", err)
			}
		})
	}
}

func TestInfo(t *testing.T) {
	info := (&Sink{}).Info()
	if info.Kind != sdk.KindSink || info.Type != "zendesk" {
		t.Fatalf("%s %s", info.Kind, info.Type)
	}
	templates := map[string]bool{}
	names := map[string]bool{}
	for _, a := range info.Config {
		if names[a.Name] {
			t.Errorf("%s declared twice", a.Name)
		}
		names[a.Name] = true
		if a.Template {
			templates[a.Name] = true
		}
	}
	if !reflect.DeepEqual(templates, map[string]bool{"ticket_id": true, "comment": true}) {
		t.Errorf("template attributes %v", templates)
	}
	if (&Sink{}).MaxBatch() != 100 {
		t.Error("MaxBatch")
	}
}
