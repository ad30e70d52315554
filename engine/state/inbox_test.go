package state

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

func TestInboxAppendReadDedupeAndPrune(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	in := s.Inbox("p", "push")
	now := time.Unix(1_800_000_000, 0)
	res, pending, err := in.Append(ctx, []InboxEntry{
		{Records: []byte("{\"a\":1}\n{\"a\":2}\n"), Count: 2, Key: "k1", KeyWindow: time.Hour, Response: []byte("first")},
		{Records: []byte("{\"a\":3}\n"), Count: 1},
		{Records: []byte("{\"a\":9}\n"), Count: 1, Key: "k1", KeyWindow: time.Hour}, // same key in one call
	}, now)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].First != 1 || res[1].First != 3 || !res[2].Duplicate || string(res[2].Response) != "first" || pending != 3 {
		t.Fatalf("append: %+v pending %d", res, pending)
	}
	// A retry with the key within its window stores nothing.
	res, pending, err = in.Append(ctx, []InboxEntry{{Records: []byte("{\"a\":1}\n"), Count: 1, Key: "k1", KeyWindow: time.Hour}}, now.Add(time.Minute))
	if err != nil || !res[0].Duplicate || string(res[0].Response) != "first" || pending != 3 {
		t.Fatalf("retry: %+v pending %d, %v", res, pending, err)
	}
	got, err := in.Read(ctx, 0, 100)
	if err != nil || len(got) != 2 || got[0].First != 1 || got[0].Count != 2 || got[1].First != 3 {
		t.Fatalf("read: %+v, %v", got, err)
	}
	if got, _ := in.Read(ctx, 2, 100); len(got) != 1 || got[0].First != 3 {
		t.Fatalf("read after 2: %+v", got)
	}
	// Survives a reopen (it was durable before Append returned).
	s.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	in = s.Inbox("p", "push")
	st, err := in.Status(ctx, now.Add(2*time.Minute))
	if err != nil || st.Pending != 3 || st.Last != 3 || !st.Oldest.Equal(now) {
		t.Fatalf("status: %+v, %v", st, err)
	}
	counts, err := s.InboxCounts(ctx)
	if err != nil || len(counts) != 1 || counts[0].Accepted != 3 || counts[0].Pending != 3 || !counts[0].Oldest.Equal(now) {
		t.Fatalf("counts: %+v, %v", counts, err)
	}
	s.AddPushRequests("p", "push", map[int]int64{202: 2, 401: 1})
	s.AddPushRequests("p", "push", map[int]int64{202: 1})
	for _, r := range s.PushRequests() {
		if (r.Status == 202 && r.N != 3) || (r.Status == 401 && r.N != 1) {
			t.Errorf("push requests: %+v", r)
		}
	}
	// The pipeline commits past record 2: one record pending, the first
	// entry is pruned.
	if err := s.Commit(ctx, "p", "push", InboxPosition(2), 2); err != nil {
		t.Fatal(err)
	}
	st, err = in.Status(ctx, now.Add(3*time.Minute))
	if err != nil || st.Pending != 1 {
		t.Fatalf("status after commit: %+v, %v", st, err)
	}
	if got, _ := in.Read(ctx, 0, 100); len(got) != 1 || got[0].First != 3 {
		t.Fatalf("after pruning, read from 0: %+v", got)
	}
	// A reset moves the position back; what was pruned is not pending.
	if _, err := s.Reset(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	if st, _ := in.Status(ctx, now.Add(4*time.Minute)); st.Pending != 1 {
		t.Fatalf("after reset: %+v", st)
	}
	if counts, _ := s.InboxCounts(ctx); len(counts) != 1 || counts[0].Pending != 1 || counts[0].Oldest.IsZero() {
		t.Fatalf("counts after reset: %+v", counts)
	}
	// Past its window the key stores again; numbering goes on.
	res, _, err = in.Append(ctx, []InboxEntry{{Records: []byte("{\"a\":1}\n"), Count: 1, Key: "k1", KeyWindow: time.Hour}}, now.Add(2*time.Hour))
	if err != nil || res[0].Duplicate || res[0].First != 4 {
		t.Fatalf("after the window: %+v, %v", res, err)
	}
	if ParseInboxPosition([]byte("x")) != 0 || ParseInboxPosition(InboxPosition(42)) != 42 {
		t.Error("positions")
	}
}
