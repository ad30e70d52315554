package config

import (
	"fmt"
	"regexp"
	"strings"
	"time"
	// The IANA time zone database, embedded so that a timezone attribute
	// means the same on every machine, also on minimal images without
	// /usr/share/zoneinfo.
	_ "time/tzdata"

	"github.com/hashicorp/hcl/v2"
	"github.com/robfig/cron/v3"
)

// descriptors are the named schedules cron.ParseStandard knows.
var descriptors = []string{"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly", "@every"}

// cronFieldCount strips the list of fields robfig/cron appends to a count
// error ("expected exactly 5 fields, found 4: [0 2 * *]"): the message
// quotes the whole schedule already.
var cronFieldCount = regexp.MustCompile(`^(expected .* fields, found \d+): .*$`)

const scheduleHelp = `A schedule is a cron expression of 5 fields (minute hour day-of-month month day-of-week, like "0 2 * * *" for 02:00 every day) or a descriptor like "@hourly", "@daily" or "@every 10m".`

// schedule decodes the pipeline block's schedule and timezone attributes;
// either may be nil.
func (d *decoder) schedule(schedAttr, tzAttr *hcl.Attribute, ctx *hcl.EvalContext) {
	if tzAttr != nil {
		// A bad timezone does not stop the schedule from being checked too.
		if tz, ok := d.stringAttr(tzAttr, ctx, `A timezone is an IANA name like "UTC" or "Europe/Berlin".`); ok {
			loc, err := loadLocation(tz)
			switch {
			case err != nil:
				d.errorf(tzAttr.Expr.Range().Ptr(), "Invalid timezone",
					fmt.Sprintf(`unknown timezone %q: a timezone is an IANA name like "UTC", "Europe/Berlin" or "America/New_York".`, tz))
			case schedAttr == nil:
				d.warnf(tzAttr.Expr.Range().Ptr(), "Timezone without schedule",
					"The timezone only says how the schedule is read, and this pipeline block has no schedule: the timezone has no effect.")
			default:
				d.p.Location = loc
			}
		}
	}
	if schedAttr == nil {
		return
	}
	src, ok := d.stringAttr(schedAttr, ctx, scheduleHelp)
	if !ok {
		return
	}
	spec, detail := parseSchedule(src, d.p.Location)
	if detail != "" {
		d.errorf(schedAttr.Expr.Range().Ptr(), "Invalid schedule", detail)
		return
	}
	d.p.Schedule, d.p.ScheduleSpec = src, spec
}

// loadLocation is time.LoadLocation without its two special cases that are
// no IANA names: "" (UTC) and "Local" (whatever the host is set to).
func loadLocation(name string) (*time.Location, error) {
	if name == "" || name == "Local" {
		return nil, fmt.Errorf("not an IANA time zone name")
	}
	return time.LoadLocation(name)
}

// parseSchedule parses a schedule to be read in loc, or says what is wrong
// with it.
func parseSchedule(src string, loc *time.Location) (cron.Schedule, string) {
	trimmed := strings.TrimSpace(src)
	switch {
	case trimmed == "":
		return nil, "A schedule cannot be empty; without a schedule attribute `pipeline serve` runs the pipeline continuously. " + scheduleHelp
	case strings.HasPrefix(trimmed, "TZ=") || strings.HasPrefix(trimmed, "CRON_TZ="):
		return nil, fmt.Sprintf("schedule %q: set the time zone with the pipeline block's timezone attribute, not in the schedule.", src)
	}
	spec, err := cron.ParseStandard(trimmed)
	if err != nil {
		msg := cronFieldCount.ReplaceAllString(err.Error(), "$1")
		detail := fmt.Sprintf("schedule %q: %s. %s", src, msg, scheduleHelp)
		if strings.HasPrefix(trimmed, "@") {
			word, _, _ := strings.Cut(trimmed, " ")
			if s := Suggest(word, descriptors); s != "" && s != word {
				detail += fmt.Sprintf(" Did you mean %q?", s)
			}
		}
		return nil, detail
	}
	if s, ok := spec.(*cron.SpecSchedule); ok {
		// Read in the pipeline's time zone whatever zone Next is given.
		s.Location = loc
	}
	if spec.Next(time.Now().In(loc)).IsZero() {
		return nil, fmt.Sprintf("schedule %q never fires: no day matches it. %s", src, scheduleHelp)
	}
	return spec, ""
}
