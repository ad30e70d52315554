package delivery

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/pipelinehq/pipeline/sdk"
	"github.com/pipelinehq/pipeline/sdk/delivery/policy"
)

// Limiter paces the sends to each endpoint: Reserve reserves one send and
// says how long to wait before it. *policy.Limiter is one (this process's
// own); SharedLimiter shares one with the other workers of a cluster.
type Limiter interface {
	Reserve(endpoint string, now time.Time) time.Duration
}

// Scopes of a rate limit (rate_limit_scope).
const (
	ScopeWorker  = "worker"  // each worker keeps the rate on its own (the default)
	ScopeCluster = "cluster" // the workers of a cluster keep it together
)

// ScopeAttribute is the rate_limit_scope attribute of the action sinks
// whose rate_limit can be shared.
func ScopeAttribute() sdk.Attribute {
	return sdk.Attribute{Name: "rate_limit_scope", Type: sdk.String, Default: ScopeWorker,
		Description: `Who keeps rate_limit: "worker" (each pipeline serve process on its own, the default) or "cluster" (all the workers of serve --cluster together, through the cluster's state; on one machine the same as "worker").`}
}

// CheckScope checks a rate_limit_scope value.
func CheckScope(scope string) error {
	switch scope {
	case "", ScopeWorker, ScopeCluster:
		return nil
	}
	return errors.New(`rate_limit_scope: want "worker" or "cluster", got "` + scope + `"`)
}

// sharedTimeout bounds one reservation through the engine.
const sharedTimeout = 2 * time.Second

// SharedLimiter keeps a rate limit together with the other workers of a
// cluster, through out when it is an sdk.RateReserver served by a cluster,
// and also paces by local (this process's limiter, which a sink may pause
// for a Retry-After): a send waits for the later of the two. Where the
// engine keeps no shared limits (one machine), or a reservation fails,
// local alone keeps the rate.
func SharedLimiter(out sdk.Outbox, local *policy.Limiter, rate policy.Rate, burst int, log *slog.Logger) Limiter {
	rr, _ := out.(sdk.RateReserver)
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &sharedLimiter{rr: rr, local: local, interval: rate.Interval(), burst: max(burst, 1), log: log}
}

type sharedLimiter struct {
	rr       sdk.RateReserver
	local    *policy.Limiter
	interval time.Duration
	burst    int
	log      *slog.Logger
	alone    atomic.Bool // the engine keeps no shared limits
	warned   atomic.Int64
}

func (l *sharedLimiter) Reserve(endpoint string, now time.Time) time.Duration {
	wait := l.local.Reserve(endpoint, now)
	if l.rr == nil || l.alone.Load() {
		return wait
	}
	ctx, cancel := context.WithTimeout(context.Background(), sharedTimeout)
	defer cancel()
	shared, err := l.rr.Reserve(ctx, endpoint, l.interval, l.burst)
	switch {
	case errors.Is(err, sdk.ErrNoSharedRate):
		l.alone.Store(true)
		return wait
	case err != nil:
		// The cluster's state is away: this worker keeps the rate alone
		// meanwhile (warned at most once a minute).
		if last := l.warned.Load(); now.UnixNano()-last > int64(time.Minute) && l.warned.CompareAndSwap(last, now.UnixNano()) {
			l.log.Warn("the shared rate limit could not be reserved; this worker keeps the rate on its own meanwhile", "endpoint", endpoint, "error", err)
		}
		return wait
	}
	return max(wait, shared)
}
