package cluster

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/engine/state"
	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
)

func avIDs(ds []state.DeliveryRecord) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	slices.Sort(out)
	return out
}

// The admin view of one outbox: delivered, retrying, pending and dead
// deliveries, filtered, paged and counted as the state store's are, and
// only dead letters replayed.
func TestAdminViewListsFiltersPagesAndReplays(t *testing.T) {
	_, c, s := obOne(t, OutboxOptions{})
	var ds []*pluginv1.Delivery
	for i := range 12 {
		ds = append(ds, obDel(fmt.Sprintf("d%02d", i), "https://crm.example/hook", ""))
	}
	ds = append(ds, obDel("special", "https://other.example/hook", ""))
	obEnqueue(t, s, ds...)
	leased := obLeaseUntil(t, s, 100, len(ds), 5*time.Second)
	if len(leased) != len(ds) {
		t.Fatalf("leased %d of %d", len(leased), len(ds))
	}
	var rs []*pluginv1.Result
	for i := range 8 {
		rs = append(rs, obDelivered(fmt.Sprintf("d%02d", i)))
	}
	rs = append(rs, obFailed("d08", time.Now().Add(time.Hour)), obFailed("d09", time.Now().Add(time.Hour)),
		&pluginv1.Result{Id: "d10", Outcome: pluginv1.Outcome_DEAD, Attempt: &pluginv1.Attempt{AtUnixMs: time.Now().UnixMilli(), StatusCode: 422, Error: "422 Unprocessable Entity", Response: []byte("unknown customer")}})
	obRecord(t, s, rs...)
	// d11 and special stay leased: pending, no attempt yet.
	v := c.AdminView(func() []SinkRef { return []SinkRef{{obTestPipeline, obTestSink}, {obTestPipeline, "no-outbox"}} })
	list := func(f state.DeliveryFilter) []state.DeliveryRecord {
		t.Helper()
		var all []state.DeliveryRecord
		cursor := ""
		for {
			page, err := v.DeliveryPage(obBg, f, cursor, 5)
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Deliveries) > 5 {
				t.Fatalf("a page of %d, limit 5", len(page.Deliveries))
			}
			all = append(all, page.Deliveries...)
			if page.Next == "" {
				return all
			}
			cursor = page.Next
		}
	}
	for _, c := range []struct {
		f    state.DeliveryFilter
		want []string
	}{
		{state.DeliveryFilter{Status: state.StatusDelivered}, []string{"d00", "d01", "d02", "d03", "d04", "d05", "d06", "d07"}},
		{state.DeliveryFilter{Status: state.StatusFailed}, []string{"d08", "d09"}},
		{state.DeliveryFilter{Status: state.StatusPending}, []string{"d08", "d09", "d11", "special"}},
		{state.DeliveryFilter{Status: state.StatusDead}, []string{"d10"}},
		{state.DeliveryFilter{Q: "OTHER.example"}, []string{"special"}},
		{state.DeliveryFilter{Q: "payload of d0"}, []string{"d08", "d09"}}, // (payloads of pending and dead ones only)
		{state.DeliveryFilter{Q: "unprocessable"}, []string{"d10"}},
		{state.DeliveryFilter{Since: time.Now().Add(time.Hour)}, nil},
		{state.DeliveryFilter{Sink: "other"}, nil},
	} {
		got := avIDs(list(c.f))
		if !slices.Equal(got, c.want) && !(len(got) == 0 && len(c.want) == 0) {
			t.Errorf("%+v: %v, want %v", c.f, got, c.want)
		}
	}
	if all := list(state.DeliveryFilter{}); len(all) != 13 {
		t.Errorf("every delivery: %d, want 13", len(all))
	} else {
		for i := 1; i < len(all); i++ {
			if all[i].UpdatedAt.After(all[i-1].UpdatedAt) {
				t.Errorf("not newest change first at %d: %v after %v", i, all[i].UpdatedAt, all[i-1].UpdatedAt)
			}
		}
	}
	if _, err := v.DeliveryPage(obBg, state.DeliveryFilter{}, "not-a-cursor", 5); !errors.Is(err, state.ErrBadCursor) {
		t.Errorf("a bad cursor: %v", err)
	}
	// One delivery, with its attempts.
	d, err := v.Delivery(obBg, obTestPipeline, obTestSink, "d08")
	if err != nil {
		t.Fatal(err)
	}
	if d.Status != state.StatusPending || d.Attempts != 1 || d.LastCode != 503 || d.LastError == "" || len(d.Log) != 1 || d.NextAt.Before(time.Now().Add(50*time.Minute)) {
		t.Errorf("d08: %+v, want pending after one 503, due in an hour", d)
	}
	if d, err := v.Delivery(obBg, obTestPipeline, obTestSink, "d10"); err != nil || d.Status != state.StatusDead || d.LastCode != 422 || string(d.Log[0].Response) != "unknown customer" {
		t.Errorf("d10: %+v %v", d, err)
	}
	if _, err := v.Delivery(obBg, obTestPipeline, obTestSink, "none"); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("no such delivery: %v", err)
	}
	if got, err := v.DeliveriesByID(obBg, "d03"); err != nil || len(got) != 1 || got[0].Status != state.StatusDelivered {
		t.Errorf("by id: %+v %v", got, err)
	}
	// Counts.
	sum, err := v.Summary(obBg, state.DeliveryFilter{Pipeline: obTestPipeline})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum) != 1 || sum[0].Pending != 4 || sum[0].Retrying != 2 || sum[0].Delivered != 8 || sum[0].Dead != 1 {
		t.Errorf("summary %+v, want 4 pending (2 retrying), 8 delivered, 1 dead", sum)
	}
	// Replay: only dead letters.
	for _, f := range []state.DeliveryFilter{{Status: state.StatusDelivered}, {ID: "d03"}, {ID: "d11"}} {
		if _, err := v.Replay(obBg, f, time.Now()); !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("replay %+v: %v, want ErrUnsupported", f, err)
		}
	}
	if n, err := v.Replay(obBg, state.DeliveryFilter{ID: "d10"}, time.Now()); err != nil || n != 1 {
		t.Fatalf("replay of the dead letter: %d %v", n, err)
	}
	if d, err := v.Delivery(obBg, obTestPipeline, obTestSink, "d10"); err != nil || d.Status != state.StatusPending || d.Attempts != 0 {
		t.Errorf("d10 after its replay: %+v %v, want pending with no attempt since", d, err)
	}
	if got := obLeaseUntil(t, s, 10, 1, 5*time.Second); len(got) != 1 || got[0].Id != "d10" {
		t.Errorf("leased after the replay: %v", obIds(got))
	}
}
