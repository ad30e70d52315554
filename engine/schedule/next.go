package schedule

import (
	"time"

	"github.com/robfig/cron/v3"
)

// Next returns the first firing of spec strictly after after, with a cron
// expression read on the wall clock of loc (nil means UTC). It returns the
// zero time when spec never fires again.
//
// A cron expression names local wall-clock times, and every matching wall
// time fires exactly once, also across daylight-saving changes, as cron
// (Vixie/ISC) does for daily jobs:
//
//   - a wall time that does not exist because the clocks jump forward fires
//     when the jump ends: "0 2 * * *" in America/New_York fires at 03:00 EDT
//     on the day 02:00 is skipped, instead of not at all that day (which is
//     what robfig/cron's own Next does);
//   - a wall time that happens twice because the clocks go back fires at the
//     first occurrence only: "30 1 * * *" fires once at 01:30 EDT, not again
//     at 01:30 EST.
//
// Descriptors that are durations ("@every 10s") are absolute intervals and
// ignore the time zone.
func Next(spec cron.Schedule, loc *time.Location, after time.Time) time.Time {
	if loc == nil {
		loc = time.UTC
	}
	sp, ok := spec.(*cron.SpecSchedule)
	if !ok {
		return spec.Next(after)
	}
	// The same expression on a clock without daylight saving: the local
	// wall time, labelled UTC.
	naive := *sp
	naive.Location = time.UTC
	w := wall(after.In(loc))
	// Each round moves w to a later matching wall time; it takes more than
	// one only for wall times that map to instants not after after (a second
	// occurrence, a skipped interval), a handful at most.
	for range 1000 {
		w = naive.Next(w)
		if w.IsZero() {
			return time.Time{}
		}
		if t := instant(w, loc); t.After(after) {
			return t
		}
	}
	return time.Time{}
}

// wall is t's wall-clock time in its location, labelled UTC.
func wall(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
}

// instant is the first instant whose wall-clock time in loc is w (a wall time
// labelled UTC), or, when the clocks jump over w, the instant the jump ends.
func instant(w time.Time, loc *time.Location) time.Time {
	// The offsets in effect around w: a transition near w lies between them.
	_, before := w.Add(-26 * time.Hour).In(loc).Zone()
	_, after := w.Add(26 * time.Hour).In(loc).Zone()
	var found time.Time
	var cands []time.Time
	for _, off := range []int{before, after} {
		c := w.Add(-time.Duration(off) * time.Second)
		cands = append(cands, c)
		if wall(c.In(loc)).Equal(w) && (found.IsZero() || c.Before(found)) {
			found = c
		}
	}
	if !found.IsZero() {
		return found
	}
	// w falls in a gap: the clocks jump from before it to after it at the
	// end of the zone period the earlier candidate lies in.
	lo := cands[0]
	if cands[1].Before(lo) {
		lo = cands[1]
	}
	if _, end := lo.In(loc).ZoneBounds(); !end.IsZero() && end.After(lo) {
		return end
	}
	return lo
}
