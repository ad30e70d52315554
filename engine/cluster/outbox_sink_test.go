package cluster

// The real thing against the JetStream outbox: the webhook sink plugin
// (its sdk/delivery deliverer) served in process over go-plugin, reaching
// the OutboxService through the broker exactly as the engine serves it,
// delivering to an httptest receiver. Two such workers share one outbox.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/hashicorp/go-plugin"

	"github.com/pipelinehq/pipeline/engine/cluster/natstest"
	sinkwebhook "github.com/pipelinehq/pipeline/plugins/sink-webhook"
	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/arrowjson"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
	"github.com/pipelinehq/pipeline/sdk/wire"
)

// obReceiver is a webhook endpoint: it answers 503 to the first attempt of
// ids ending in "3", 422 to ids starting with "dead" (until accept is
// set), 200 otherwise, and records what it got.
type obReceiver struct {
	mu        sync.Mutex
	attempts  map[string]int
	ok        map[string]int
	order     map[string][]string // order key → ids accepted, in order
	inflight  map[string]int      // order key → requests under way
	overlap   []string
	acceptAll bool
}

func (r *obReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	var rec struct {
		RowID string `json:"row_id"`
		Key   string `json:"key"`
	}
	_ = json.Unmarshal(body, &rec)
	id := req.Header.Get("webhook-id")
	r.mu.Lock()
	r.attempts[id]++
	n := r.attempts[id]
	if rec.Key != "" {
		r.inflight[rec.Key]++
		if r.inflight[rec.Key] > 1 {
			r.overlap = append(r.overlap, id)
		}
	}
	accept := r.acceptAll
	r.mu.Unlock()
	time.Sleep(2 * time.Millisecond)
	status := http.StatusOK
	switch {
	case id != rec.RowID:
		status = http.StatusBadRequest // the webhook-id must be the record's id
	case strings.HasPrefix(id, "dead") && !accept:
		status = http.StatusUnprocessableEntity
	case strings.HasSuffix(id, "3") && n == 1:
		status = http.StatusServiceUnavailable
	}
	r.mu.Lock()
	if rec.Key != "" {
		r.inflight[rec.Key]--
	}
	if status == http.StatusOK {
		r.ok[id]++
		if rec.Key != "" {
			r.order[rec.Key] = append(r.order[rec.Key], id)
		}
	}
	r.mu.Unlock()
	w.WriteHeader(status)
}

// obBatch is records as the engine hands them to the sink: with their ids
// and the order_by template rendered (the record's key).
func obBatch(t *testing.T, records []string) arrow.RecordBatch {
	t.Helper()
	dec := arrowjson.NewDecoder(arrowjson.Options{})
	defer dec.Release()
	var ids, keys []string
	var valid []bool
	for _, r := range records {
		if err := dec.Append([]byte(r)); err != nil {
			t.Fatal(err)
		}
		var v struct {
			RowID string `json:"row_id"`
			Key   string `json:"key"`
		}
		_ = json.Unmarshal([]byte(r), &v)
		ids = append(ids, v.RowID)
		keys = append(keys, v.Key)
		valid = append(valid, v.Key != "")
	}
	rec := dec.Flush()
	defer rec.Release()
	fields := append([]arrow.Field(nil), rec.Schema().Fields()...)
	cols := append([]arrow.Array(nil), rec.Columns()...)
	add := func(name string, vals []string, valid []bool) {
		b := array.NewStringBuilder(memory.DefaultAllocator)
		defer b.Release()
		b.AppendValues(vals, valid)
		fields = append(fields, arrow.Field{Name: name, Type: arrow.BinaryTypes.String, Nullable: true})
		cols = append(cols, b.NewArray())
	}
	add(sdk.IDColumn, ids, nil)
	add(sdk.TemplateColumnPrefix+"order_by", keys, valid)
	return array.NewRecordBatch(arrow.NewSchema(fields, nil), cols, rec.NumRows())
}

// obRunSink runs one session of the webhook sink against svc: it writes
// the records in batches of 5 and ends the stream, which returns once the
// sink has delivered everything pending (or sent it to the dead letter).
func obRunSink(t *testing.T, svc *OutboxService, url string, records []string) {
	t.Helper()
	impl, err := sdk.NewServer(&sinkwebhook.Sink{})
	if err != nil {
		t.Fatal(err)
	}
	client, _ := plugin.TestPluginGRPCConn(t, false, plugin.PluginSet{wire.PluginKey: &wire.GRPCPlugin{Impl: impl}})
	defer client.Close()
	raw, err := client.Dispense(wire.PluginKey)
	if err != nil {
		t.Fatal(err)
	}
	conn := raw.(*wire.Conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, _ := json.Marshal(map[string]any{"url": url + "/hook", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "signature": "standard",
		"timeout": "5s", "concurrency": 8, "allow_private_networks": true, "https_only": false,
		"retry": map[string]any{"schedule": []string{"0s", "100ms", "100ms", "100ms"}}})
	if _, err := conn.Plugin.Configure(ctx, &pluginv1.ConfigureRequest{Name: "crm", ConfigJson: cfg, Templates: []string{"order_by"},
		StateBrokerId: wire.ServeState(conn.Broker, svc)}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	stream, err := conn.Plugin.Write(ctx)
	if err != nil {
		t.Fatal(err)
	}
	enc := wire.NewEncoder(nil)
	seq := uint64(0)
	for len(records) > 0 {
		part := records[:min(5, len(records))]
		records = records[len(part):]
		rec := obBatch(t, part)
		data, err := enc.Encode(rec)
		if err != nil {
			t.Fatal(err)
		}
		seq++
		if err := stream.Send(&pluginv1.WriteRequest{Seq: seq, Arrow: data, Rows: rec.NumRows()}); err != nil {
			t.Fatal(err)
		}
		rec.Release()
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var acked uint64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("the sink failed after acking %d of %d batches: %v", acked, seq, err)
		}
		acked = msg.Seq
	}
	if acked != seq {
		t.Fatalf("acked %d of %d batches", acked, seq)
	}
}

func TestOutboxServesTheWebhookSinksDeliverer(t *testing.T) {
	srv := natstest.Start(t)
	prefix := obTestPrefix()
	recv := &obReceiver{attempts: map[string]int{}, ok: map[string]int{}, order: map[string][]string{}, inflight: map[string]int{}}
	hs := httptest.NewServer(recv)
	defer hs.Close()
	c1 := obConnect(t, srv, prefix, "w1")
	s1 := obService(t, c1, OutboxOptions{Lanes: 4})
	s2 := obService(t, obConnect(t, srv, prefix, "w2"), OutboxOptions{Lanes: 4})
	var w1, w2 []string
	var want []string
	for i := range 40 {
		key := ""
		if i%4 == 0 {
			key = fmt.Sprintf("customer-%d", i%3)
		}
		id := fmt.Sprintf("r%02d", i)
		rec := fmt.Sprintf(`{"row_id":%q,"key":%q,"n":%d}`, id, key, i)
		if key == "" {
			rec = fmt.Sprintf(`{"row_id":%q,"n":%d}`, id, i)
		}
		want = append(want, id)
		// Each key's records come from one worker (one source
		// partition), in order; the rest are split.
		if key != "" || i%2 == 0 {
			w1 = append(w1, rec)
		} else {
			w2 = append(w2, rec)
		}
	}
	w2 = append(w2, `{"row_id":"dead-1","n":-1}`)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); obRunSink(t, s1, hs.URL, w1) }()
	go func() { defer wg.Done(); obRunSink(t, s2, hs.URL, w2) }()
	wg.Wait()

	recv.mu.Lock()
	for _, id := range want {
		if recv.ok[id] != 1 {
			t.Errorf("%s accepted %d times (attempts %d)", id, recv.ok[id], recv.attempts[id])
		}
		if strings.HasSuffix(id, "3") && recv.attempts[id] != 2 {
			t.Errorf("%s: %d attempts, want 2 (a 503 first)", id, recv.attempts[id])
		}
	}
	if len(recv.overlap) > 0 {
		t.Errorf("deliveries of one key in flight at once: %q", recv.overlap)
	}
	for key, got := range recv.order {
		for i := 1; i < len(got); i++ {
			if got[i] < got[i-1] {
				t.Errorf("key %s delivered out of order: %q", key, got)
				break
			}
		}
	}
	recv.mu.Unlock()
	if p := obPending(t, s1); p.Pending != 0 || p.Dead != 1 {
		t.Fatalf("pending %v", p)
	}
	letters, err := c1.DeadLetters(obBg, obTestPipeline, obTestSink, 0)
	if err != nil || len(letters) != 1 || letters[0].ID != "dead-1" || letters[0].LastStatus != 422 || letters[0].Attempts != 1 {
		t.Fatalf("dead letters %+v, %v", letters, err)
	}
	log, err := c1.DeliveryLog(obBg, obTestPipeline, obTestSink, 0)
	if err != nil {
		t.Fatal(err)
	}
	recv.mu.Lock()
	total := 0
	for _, n := range recv.attempts {
		total += n
	}
	recv.mu.Unlock()
	if len(log) != total {
		t.Errorf("the log holds %d attempts, the receiver saw %d", len(log), total)
	}
	// The sink's retention (its defaults) reached the streams.
	n := c1.outboxNames(obTestPipeline, obTestSink)
	if st, err := c1.JetStream().Stream(obBg, n.dead); err != nil || st.CachedInfo().Config.MaxAge != sdk.DefaultRetention.Dead {
		t.Errorf("dead letters' MaxAge: %v", err)
	}

	// Replayed, the dead letter goes out with the next session of the
	// sink, under its own id.
	recv.mu.Lock()
	recv.acceptAll = true
	recv.mu.Unlock()
	if n, err := c1.Replay(obBg, obTestPipeline, obTestSink, nil); err != nil || n != 1 {
		t.Fatalf("replay: %d, %v", n, err)
	}
	obRunSink(t, s2, hs.URL, nil)
	recv.mu.Lock()
	defer recv.mu.Unlock()
	if recv.ok["dead-1"] != 1 {
		t.Errorf("the replayed delivery was accepted %d times", recv.ok["dead-1"])
	}
	if p := obPending(t, s1); p.Pending != 0 || p.Dead != 0 {
		t.Fatalf("pending after the replay %v", p)
	}
}
