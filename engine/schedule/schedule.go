// Package schedule runs jobs on cron schedules.
//
// Time comes from a Clock, so that tests drive it with a FakeClock instead of
// waiting. Each job's firings are computed in its own time zone (see Next for
// daylight saving), and one job never runs twice at once: a firing that comes
// while the job's previous run is still going is skipped.
package schedule

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"
)

// Clock is the scheduler's source of time.
type Clock interface {
	Now() time.Time
	// After sends the time on the returned channel once d has passed.
	After(d time.Duration) <-chan time.Time
}

// RealClock is the system clock.
type RealClock struct{}

// Now implements Clock.
func (RealClock) Now() time.Time { return time.Now() }

// After implements Clock.
func (RealClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Job is work to run on a schedule.
type Job struct {
	// Name identifies the job in logs.
	Name     string
	Schedule cron.Schedule
	// Location is the time zone Schedule is read in; nil means UTC.
	Location *time.Location
	// Run does one run. Its ctx is the one given to Scheduler.Run: it ends
	// when the scheduler is stopped, and Scheduled(ctx) tells the time the
	// run was scheduled for.
	Run func(ctx context.Context)
	// OnSkip, if set, is called for every firing skipped because the
	// previous run was still going.
	OnSkip func(scheduled time.Time)
}

// Scheduler runs jobs on their schedules. Add jobs, then call Run once.
type Scheduler struct {
	clock Clock
	log   *slog.Logger

	mu      sync.Mutex
	jobs    []*job
	started bool
}

type job struct {
	Job
	running atomic.Bool
}

// New returns a scheduler on clock (nil: the system clock) that logs to log
// (nil: nowhere).
func New(clock Clock, log *slog.Logger) *Scheduler {
	if clock == nil {
		clock = RealClock{}
	}
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Scheduler{clock: clock, log: log}
}

// Add adds a job. It must be called before Run.
func (s *Scheduler) Add(j Job) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		panic("schedule: Add after Run")
	}
	if j.Location == nil {
		j.Location = time.UTC
	}
	s.jobs = append(s.jobs, &job{Job: j})
}

// Run runs the jobs on their schedules until ctx ends, then waits for the
// runs still going to return. It returns an error, and runs nothing, when a
// job lacks its Schedule or Run, or when called twice.
func (s *Scheduler) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("schedule: Run called twice")
	}
	s.started = true
	jobs := s.jobs
	s.mu.Unlock()
	for _, j := range jobs {
		if j.Schedule == nil || j.Run == nil {
			return fmt.Errorf("schedule: job %q has no schedule or no Run", j.Name)
		}
	}

	var loops, runs sync.WaitGroup
	for _, j := range jobs {
		loops.Add(1)
		go func() {
			defer loops.Done()
			s.loop(ctx, j, &runs)
		}()
	}
	// Every runs.Add happens in a loop, before its loops.Done.
	loops.Wait()
	runs.Wait()
	return nil
}

// loop fires one job until ctx ends.
func (s *Scheduler) loop(ctx context.Context, j *job, runs *sync.WaitGroup) {
	next := Next(j.Schedule, j.Location, s.clock.Now())
	for {
		if next.IsZero() {
			s.log.Warn("schedule never fires again", "job", j.Name)
			return
		}
		s.log.Debug("next run", "job", j.Name, "at", next.In(j.Location).Format(time.RFC3339))
		select {
		case <-ctx.Done():
			return
		case <-s.clock.After(next.Sub(s.clock.Now())):
		}
		if ctx.Err() != nil {
			return
		}
		// A firing while the previous run is still going is skipped, not
		// queued (cron's flock idiom; Kubernetes CronJob's
		// concurrencyPolicy: Forbid). A run that takes longer than the
		// interval would otherwise build an ever-growing queue, and since a
		// run reads everything new since the last checkpoint, the next run
		// that does start picks up whatever the skipped ones would have:
		// nothing is lost by skipping.
		if !j.running.CompareAndSwap(false, true) {
			s.log.Warn("previous run still going; skipping", "job", j.Name, "scheduled", next.In(j.Location).Format(time.RFC3339))
			if j.OnSkip != nil {
				j.OnSkip(next)
			}
		} else {
			runs.Add(1)
			go func(at time.Time) {
				defer runs.Done()
				defer j.running.Store(false)
				j.Run(context.WithValue(ctx, scheduledKey{}, at))
			}(next)
		}
		// From the later of now and the firing just handled: firings missed
		// while the clock jumped (a suspended machine) are not made up one
		// by one, and a clock read a little early does not fire the same
		// time twice.
		from := s.clock.Now()
		if from.Before(next) {
			from = next
		}
		next = Next(j.Schedule, j.Location, from)
	}
}

type scheduledKey struct{}

// Scheduled returns the time a job's run was scheduled for, from the ctx the
// scheduler gave its Run.
func Scheduled(ctx context.Context) (time.Time, bool) {
	t, ok := ctx.Value(scheduledKey{}).(time.Time)
	return t, ok
}
