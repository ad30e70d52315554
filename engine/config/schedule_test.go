package config

import (
	"strings"
	"testing"
	"time"
)

const scheduleSinks = `
source "file" "calls" { path = "calls.jsonl" }
sink "webhook" "crm" {
  inputs = [source.calls]
  url    = "http://127.0.0.1:8787/hook"
}
sink "webhook" "audit" {
  inputs      = [source.calls]
  url         = "http://127.0.0.1:8787/audit"
  incremental = false
}
`

func TestScheduleDefaults(t *testing.T) {
	p := loadString(t, scheduleSinks, nil)
	if p.Schedule != "" || p.ScheduleSpec != nil {
		t.Errorf("no schedule attribute: got %q, %v", p.Schedule, p.ScheduleSpec)
	}
	if p.Location != time.UTC {
		t.Errorf("Location = %v, want UTC", p.Location)
	}
	if !p.Sinks[0].Incremental || p.Sinks[1].Incremental {
		t.Errorf("Incremental = %v, %v; want true (absent), false", p.Sinks[0].Incremental, p.Sinks[1].Incremental)
	}
}

func TestScheduleInTimezone(t *testing.T) {
	p := loadString(t, `pipeline {
  schedule = "0 2 * * *"
  timezone = "Europe/Berlin"
}
`+scheduleSinks, nil)
	if p.Schedule != "0 2 * * *" || p.Location.String() != "Europe/Berlin" {
		t.Fatalf("Schedule %q, Location %v", p.Schedule, p.Location)
	}
	// 02:00 in Berlin is 00:00 UTC in summer, whatever zone Next is given.
	from := time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)
	want := time.Date(2026, 7, 2, 0, 0, 0, 0, time.UTC)
	if got := p.ScheduleSpec.Next(from); !got.Equal(want) {
		t.Errorf("Next(%v) = %v, want %v", from, got.UTC(), want)
	}
}

func TestScheduleDescriptors(t *testing.T) {
	for _, s := range []string{"@hourly", "@daily", "@weekly", "@every 10s", "@every 1h30m", "*/5 * * * *", "0 9 * * MON-FRI"} {
		p := loadString(t, "pipeline {\n  schedule = \""+s+"\"\n}\n"+scheduleSinks, nil)
		if p.ScheduleSpec == nil {
			t.Errorf("%q: no ScheduleSpec", s)
		}
	}
}

func TestScheduleErrors(t *testing.T) {
	for _, tc := range []struct{ attrs, want string }{
		{`schedule = "0 2 * *"`, `churn.hcl:2:14: error: Invalid schedule: schedule "0 2 * *": expected exactly 5 fields, found 4.`},
		{`schedule = "0 2 * * * *"`, `expected exactly 5 fields, found 6.`},
		{`schedule = "61 * * * *"`, `schedule "61 * * * *": end of range (61) above maximum (59)`},
		{`schedule = "@dayly"`, `Did you mean "@daily"?`},
		{`schedule = ""`, `A schedule cannot be empty`},
		{`schedule = "CRON_TZ=UTC 0 2 * * *"`, `set the time zone with the pipeline block's timezone attribute`},
		{`schedule = "0 0 30 2 *"`, `never fires`},
		{`schedule = 5`, `Inappropriate value for attribute "schedule": string required.`},
		{"schedule = \"@daily\"\n  timezone = \"Mars/Base\"", `churn.hcl:3:14: error: Invalid timezone: unknown timezone "Mars/Base"`},
		{"schedule = \"@daily\"\n  timezone = \"Local\"", `unknown timezone "Local"`},
		{"schedule = \"@daily\"\n  timezone = \"\"", `unknown timezone ""`},
		{`timezone = "UTC"`, `churn.hcl:2:14: warning: Timezone without schedule`},
	} {
		_, diags := LoadBytes([]byte("pipeline {\n  "+tc.attrs+"\n}\n"+scheduleSinks), "churn.hcl")
		if got := compact(diags); !strings.Contains(got, tc.want) || len(diags) != 1 {
			t.Errorf("%s:\ngot  %s\nwant one diagnostic with %s", tc.attrs, got, tc.want)
		}
	}
}

func TestIncrementalNotBool(t *testing.T) {
	for _, v := range []string{`"yes"`, `"true"`, `1`, `null`} {
		_, diags := LoadBytes([]byte(`source "file" "calls" { path = "calls.jsonl" }
sink "webhook" "crm" {
  inputs      = [source.calls]
  incremental = `+v+`
}
`), "churn.hcl")
		want := `churn.hcl:4:17: error: Incorrect attribute value type: Inappropriate value for attribute "incremental": bool required.`
		if got := compact(diags); !strings.Contains(got, want) || len(diags) != 1 {
			t.Errorf("incremental = %s:\ngot  %s\nwant %s", v, got, want)
		}
	}
}

// A plugin cannot declare incremental: the engine takes it.
func TestIncrementalReserved(t *testing.T) {
	p := loadString(t, scheduleSinks, nil)
	info := testInfos[1] // webhook
	info.Config = append(info.Config[:len(info.Config):len(info.Config)], info.Config[0])
	info.Config[len(info.Config)-1].Name = "incremental"
	_, diags := DecodePluginBody(p.Sinks[1].Body, info, p.Sinks[1].EvalCtx)
	if got := compact(diags); !strings.Contains(got, `declares the attribute "incremental", which the engine reserves`) {
		t.Errorf("got %s", got)
	}
}
