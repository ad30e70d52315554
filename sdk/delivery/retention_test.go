package delivery_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/delivery"
)

// retentionTransport sends nothing: these tests only start the loop.
type retentionTransport struct{}

func (retentionTransport) Prepare(b sdk.Batch, i int) (sdk.Delivery, error) {
	return sdk.Delivery{ID: b.ID(i)}, nil
}
func (retentionTransport) Send(context.Context, sdk.Delivery) delivery.Result {
	return delivery.Result{Status: 200}
}

// waitRetention polls out until the Deliverer has told it its retention.
func waitRetention(t *testing.T, out *delivery.MemoryOutbox) sdk.Retention {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r, ok := out.Retention(); ok {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatal("the Deliverer never set the outbox's retention")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The Deliverer tells an outbox that takes one its retention as its loop
// starts: the configured one, or the defaults of a block left out.
func TestRetentionIsToldToTheOutbox(t *testing.T) {
	for _, tc := range []struct {
		name  string
		block *delivery.RetentionConfig
		want  sdk.Retention
	}{
		{name: "defaults", want: sdk.DefaultRetention},
		{name: "configured", block: &delivery.RetentionConfig{Delivered: retentionPtr("1d12h"), Attempts: retentionPtr("90d"), Dead: retentionPtr("45m")},
			want: sdk.Retention{Delivered: 36 * time.Hour, Attempts: 90 * 24 * time.Hour, Dead: 45 * time.Minute}},
		{name: "partly", block: &delivery.RetentionConfig{Delivered: retentionPtr("1s")},
			want: sdk.Retention{Delivered: time.Second, Attempts: sdk.DefaultRetention.Attempts, Dead: sdk.DefaultRetention.Dead}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := delivery.ParseRetention(tc.block)
			if err != nil {
				t.Fatal(err)
			}
			out := delivery.NewMemoryOutbox()
			d := delivery.New(retentionTransport{}, out, delivery.Options{Retention: r})
			if _, told := out.Retention(); told {
				t.Fatal("retention set before the loop started")
			}
			d.Start()
			defer d.Stop()
			if got := waitRetention(t, out); got != tc.want {
				t.Fatalf("outbox told %+v, want %+v", got, tc.want)
			}
		})
	}
}

// An outbox that does not prune (no SetRetention) is used as before.
func TestRetentionOutboxWithoutSetter(t *testing.T) {
	out := plainOutbox{delivery.NewMemoryOutbox()}
	d := delivery.New(retentionTransport{}, out, delivery.Options{Retention: sdk.DefaultRetention})
	d.Start()
	if err := d.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	d.Stop()
	if _, told := out.m.Retention(); told {
		t.Fatal("SetRetention reached an outbox that does not offer it")
	}
}

// plainOutbox hides MemoryOutbox's SetRetention.
type plainOutbox struct{ m *delivery.MemoryOutbox }

func (p plainOutbox) Enqueue(ctx context.Context, ds []sdk.Delivery) ([]int, error) {
	return p.m.Enqueue(ctx, ds)
}
func (p plainOutbox) Lease(ctx context.Context, max, per int, skip []string) ([]sdk.Delivery, time.Time, error) {
	return p.m.Lease(ctx, max, per, skip)
}
func (p plainOutbox) Record(ctx context.Context, rs []sdk.Result, cs []sdk.Circuit) error {
	return p.m.Record(ctx, rs, cs)
}
func (p plainOutbox) Pending(ctx context.Context) (sdk.OutboxStatus, error) { return p.m.Pending(ctx) }

// Bad values are errors that name the attribute, as the engine's
// diagnostics need to point at it.
func TestRetentionBadValues(t *testing.T) {
	for _, tc := range []struct {
		name  string
		block delivery.RetentionConfig
		want  string
	}{
		{"not a duration", delivery.RetentionConfig{Delivered: retentionPtr("a week")}, `retention: delivered: "a week" is not a duration`},
		{"empty", delivery.RetentionConfig{Attempts: retentionPtr("")}, `retention: attempts: "" is not a duration`},
		{"negative", delivery.RetentionConfig{Dead: retentionPtr("-1h")}, `retention: dead: "-1h" is not a duration`},
		{"zero", delivery.RetentionConfig{Dead: retentionPtr("0s")}, `retention: dead: "0s" is less than a second`},
		{"fractional days", delivery.RetentionConfig{Delivered: retentionPtr("1.5d")}, `retention: delivered: "1.5d" is not a duration`},
		{"days then junk", delivery.RetentionConfig{Delivered: retentionPtr("7dx")}, `retention: delivered: "7dx" is not a duration`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := delivery.ParseRetention(&tc.block)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("error %v, want one starting %q", err, tc.want)
			}
		})
	}
}

func TestRetentionParseDays(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"7d": 7 * 24 * time.Hour, " 30d ": 30 * 24 * time.Hour, "1d12h": 36 * time.Hour, "36h": 36 * time.Hour, "90m": 90 * time.Minute, "1s": time.Second,
	} {
		if got, err := delivery.ParseDays(in); err != nil || got != want {
			t.Errorf("ParseDays(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
}

func retentionPtr(s string) *string { return &s }

// FuzzParseDays: any text parses to a non-negative duration of at most
// 100 years, or to an error naming the input; it never panics.
func FuzzParseDays(f *testing.F) {
	for _, s := range []string{"7d", "1d12h", "36h", "90m", "", "d", "-1d", "4294967295d", "99999999d1h", "1d-1h", "9223372036s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := delivery.ParseDays(s)
		if err != nil {
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", s)) {
				t.Fatalf("ParseDays(%q): error %q does not name the input", s, err)
			}
			return
		}
		if d < 0 || d > 36500*24*time.Hour {
			t.Fatalf("ParseDays(%q) = %v, outside 0..36500 days", s, d)
		}
	})
}
