package admin

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pipelinehq/pipeline/engine/state"
)

// maxResponse is how much of an attempt's response the API shows.
const maxResponse = 4 << 10

// deliveryJSON is a delivery with its attempts, as the API shows it.
type deliveryJSON struct {
	Key       string        `json:"key"`
	ID        string        `json:"id"`
	Pipeline  string        `json:"pipeline"`
	Sink      string        `json:"sink"`
	Endpoint  string        `json:"endpoint"`
	Status    string        `json:"status"`
	Retrying  bool          `json:"retrying"`
	Attempts  int           `json:"attempts"`
	NextAt    *time.Time    `json:"next_at"`
	CreatedAt time.Time     `json:"created_at"`
	UpdatedAt time.Time     `json:"updated_at"`
	LastCode  int           `json:"last_status_code"`
	LastError string        `json:"last_error"`
	Pruned    *time.Time    `json:"payload_pruned_at,omitempty"`
	Log       []attemptJSON `json:"log"`
}

type attemptJSON struct {
	N          int       `json:"n"`
	At         time.Time `json:"at"`
	StatusCode int       `json:"status_code"`
	LatencyMs  int64     `json:"latency_ms"`
	Error      string    `json:"error"`
	Response   string    `json:"response"`
}

// deliveryKey names a delivery in URLs: its id alone is not unique, since
// one record goes to several sinks with the same id.
func deliveryKey(pipeline, sink, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(pipeline + "\x00" + sink + "\x00" + id))
}

func parseKey(key string) (pipeline, sink, id string, ok bool) {
	b, err := base64.RawURLEncoding.DecodeString(key)
	if err != nil {
		return "", "", "", false
	}
	parts := strings.Split(string(b), "\x00")
	if len(parts) != 3 {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

func toJSON(d state.DeliveryRecord) deliveryJSON {
	out := deliveryJSON{Key: deliveryKey(d.Pipeline, d.Sink, d.ID), ID: d.ID, Pipeline: d.Pipeline, Sink: d.Sink,
		Endpoint: redactURL(d.Endpoint), Status: d.Status, Retrying: d.Status == state.StatusPending && d.Attempts > 0 && d.LastError != "",
		Attempts: d.Attempts, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, LastCode: d.LastCode, LastError: d.LastError,
		Pruned: d.Pruned, Log: []attemptJSON{}}
	if d.Status == state.StatusPending {
		out.NextAt = &d.NextAt
	}
	for _, a := range d.Log {
		aj := attemptJSON{N: a.N, At: a.At, StatusCode: a.StatusCode, LatencyMs: a.Latency.Milliseconds(), Error: a.Error}
		resp := a.Response
		if len(resp) > maxResponse {
			resp = resp[:maxResponse] // the outbox keeps no more; a plugin's own may
		}
		aj.Response = text(resp)
		out.Log = append(out.Log, aj)
	}
	return out
}

// text shows a response body as text, invalid UTF-8 replaced.
func text(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

// filter reads the deliveries filter of a query string.
func (s *Server) filter(r *http.Request, defaultStatus string) (state.DeliveryFilter, error) {
	q := r.URL.Query()
	f := state.DeliveryFilter{Pipeline: q.Get("pipeline"), Sink: q.Get("sink"), Status: q.Get("status"), Q: q.Get("q")}
	if !q.Has("status") {
		f.Status = defaultStatus
	}
	switch f.Status {
	case "", state.StatusPending, state.StatusFailed, state.StatusDelivered, state.StatusDead:
	default:
		return f, errorf(http.StatusBadRequest, "status %q: want pending, failed, delivered or dead", f.Status)
	}
	if since := q.Get("since"); since != "" {
		if d, err := time.ParseDuration(since); err == nil && d > 0 {
			f.Since = s.opts.Now().Add(-d)
		} else if t, err := time.Parse(time.RFC3339, since); err == nil {
			f.Since = t
		} else {
			return f, errorf(http.StatusBadRequest, "since %q: want a duration such as 1h or an RFC 3339 time", since)
		}
	}
	return f, nil
}

func (s *Server) listDeliveries(w http.ResponseWriter, r *http.Request) error {
	f, err := s.filter(r, "")
	if err != nil {
		return err
	}
	limit := 50
	if l := r.URL.Query().Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return errorf(http.StatusBadRequest, "limit %q: want 1 to 1000", l)
		}
		limit = n
	}
	page, err := s.deliveries().DeliveryPage(r.Context(), f, r.URL.Query().Get("cursor"), limit)
	if errors.Is(err, state.ErrBadCursor) {
		return errorf(http.StatusBadRequest, "cursor: not one this API gave out")
	}
	if err != nil {
		return err
	}
	out := make([]deliveryJSON, 0, len(page.Deliveries))
	for _, d := range page.Deliveries {
		out = append(out, toJSON(d))
	}
	writeJSON(w, http.StatusOK, map[string]any{"deliveries": out, "next_cursor": page.Next})
	return nil
}

// lookup finds the delivery a path's {key} names: a key from a listing,
// or a delivery id (webhook-id) held by one sink only.
func (s *Server) lookup(r *http.Request) (state.DeliveryRecord, error) {
	key := r.PathValue("key")
	if p, sk, id, ok := parseKey(key); ok {
		d, err := s.deliveries().Delivery(r.Context(), p, sk, id)
		if err == nil || !errors.Is(err, state.ErrNotFound) {
			return d, err
		}
	}
	ds, err := s.deliveries().DeliveriesByID(r.Context(), key)
	if err != nil {
		return state.DeliveryRecord{}, err
	}
	switch len(ds) {
	case 0:
		return state.DeliveryRecord{}, errorf(http.StatusNotFound, "no delivery %q", key)
	case 1:
		return ds[0], nil
	}
	var names []string
	for _, d := range ds {
		names = append(names, d.Pipeline+"/"+d.Sink+" (key "+deliveryKey(d.Pipeline, d.Sink, d.ID)+")")
	}
	return state.DeliveryRecord{}, errorf(http.StatusConflict, "delivery id %q is held by several sinks: %s; use its key", key, strings.Join(names, ", "))
}

func (s *Server) getDelivery(w http.ResponseWriter, r *http.Request) error {
	d, err := s.lookup(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toJSON(d))
	return nil
}

func (s *Server) replayOne(w http.ResponseWriter, r *http.Request) error {
	d, err := s.lookup(r)
	if err != nil {
		return err
	}
	if d.Status == state.StatusPending {
		return errorf(http.StatusConflict, "delivery %s is pending: it is sent (again) already", d.ID)
	}
	if d.Pruned != nil {
		return errorf(http.StatusConflict, "delivery %s was delivered and its payload pruned by retention: nothing left to send", d.ID)
	}
	n, err := s.deliveries().Replay(r.Context(), state.DeliveryFilter{Pipeline: d.Pipeline, Sink: d.Sink, ID: d.ID}, s.opts.Now())
	if errors.Is(err, errors.ErrUnsupported) {
		return errorf(http.StatusConflict, "delivery %s: %v", d.ID, err)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]int64{"replayed": n})
	return nil
}

func (s *Server) replayMany(w http.ResponseWriter, r *http.Request) error {
	f, err := s.filter(r, state.StatusDead)
	if err != nil {
		return err
	}
	n, err := s.deliveries().Replay(r.Context(), f, s.opts.Now())
	if errors.Is(err, errors.ErrUnsupported) {
		return errorf(http.StatusConflict, "%v", err)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]int64{"replayed": n})
	return nil
}
