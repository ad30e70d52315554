package state

import (
	"context"
	"path/filepath"
	"testing"
)

func TestCommitGetResetSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "nested", "state.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if pos, err := s.Get(ctx, "churn", "calls"); err != nil || pos != nil {
		t.Fatalf("fresh store: got %q, %v", pos, err)
	}
	if err := s.Commit(ctx, "churn", "calls", []byte("p1"), 10); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "churn", "calls", []byte("p2"), 5); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, "other", "calls", []byte("x"), 1); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pos, err := s.Get(ctx, "churn", "calls")
	if err != nil || string(pos) != "p2" {
		t.Fatalf("after reopen: got %q, %v", pos, err)
	}
	list, err := s.List(ctx, "churn")
	if err != nil || len(list) != 1 || list[0].Records != 15 || list[0].UpdatedAt.IsZero() {
		t.Fatalf("list: %+v, %v", list, err)
	}
	n, err := s.Reset(ctx, "churn")
	if err != nil || n != 1 {
		t.Fatalf("reset: %d, %v", n, err)
	}
	if pos, _ := s.Get(ctx, "churn", "calls"); pos != nil {
		t.Fatalf("after reset: %q", pos)
	}
	if pos, _ := s.Get(ctx, "other", "calls"); string(pos) != "x" {
		t.Fatalf("reset touched another pipeline: %q", pos)
	}
}
