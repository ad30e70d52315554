package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pipelinehq/pipeline/sdk/proto/pluginv1"
)

// A rate limit shared by every worker (rate_limit_scope = "cluster") is
// a generic cell rate algorithm over one KV entry per pipeline, sink and
// endpoint: the entry holds the theoretical arrival time (TAT) of the
// next request, and each reservation moves it on by the interval with
// compare-and-set, so that the workers together never go faster than the
// rate, with at most burst requests at once.

func (c *Cluster) rateLimits(ctx context.Context) (jetstream.KeyValue, error) {
	c.rlMu.Lock()
	defer c.rlMu.Unlock()
	if c.rl != nil {
		return c.rl, nil
	}
	b, err := c.bucket(ctx, c.opts.Prefix+"_ratelimits", "pipeline: rate limits shared by the workers (rate_limit_scope = \"cluster\")", 0)
	if err != nil {
		return nil, err
	}
	c.rl = b
	return b, nil
}

// Reserve reserves one request to an endpoint of a sink at a rate of one
// per interval, with bursts of up to burst, for the whole cluster; it
// returns how long the caller waits before sending (0: now).
func (c *Cluster) Reserve(ctx context.Context, pipeline, sink, endpoint string, interval time.Duration, burst int, now time.Time) (time.Duration, error) {
	if interval <= 0 {
		return 0, nil
	}
	burst = max(burst, 1)
	kv, err := c.rateLimits(ctx)
	if err != nil {
		return 0, err
	}
	k := Token(pipeline) + "." + Token(sink) + "." + Token(endpoint)
	tolerance := interval * time.Duration(burst-1)
	for {
		var tat time.Time
		var rev uint64
		e, err := kv.Get(ctx, k)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return 0, fmt.Errorf("cluster: rate limit of %s: %w", endpoint, err)
		default:
			n, perr := strconv.ParseInt(string(e.Value()), 10, 64)
			if perr != nil {
				return 0, fmt.Errorf("cluster: rate limit of %s: %q is not a time", endpoint, e.Value())
			}
			tat, rev = time.Unix(0, n), e.Revision()
		}
		if tat.Before(now) {
			tat = now
		}
		wait := max(tat.Sub(now)-tolerance, 0)
		next := []byte(strconv.FormatInt(tat.Add(interval).UnixNano(), 10))
		if rev == 0 {
			_, err = kv.Create(ctx, k, next)
		} else {
			_, err = kv.Update(ctx, k, next, rev)
		}
		if err == nil {
			return wait, nil
		}
		if !isWrongRevision(err) && !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("cluster: rate limit of %s: %w", endpoint, err)
		}
		// Another worker reserved meanwhile: again, from its TAT.
	}
}

// Reserve implements pluginv1.StateServer: a sink's rate limit with
// rate_limit_scope = "cluster", kept by every worker together.
func (s *OutboxService) Reserve(ctx context.Context, req *pluginv1.ReserveRequest) (*pluginv1.ReserveResponse, error) {
	if req.IntervalNs <= 0 {
		return nil, status.Error(codes.InvalidArgument, "reserve: the interval must be positive")
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	w, err := s.c.Reserve(ctx, s.pipeline, s.sink, req.Endpoint, time.Duration(req.IntervalNs), int(req.Burst), time.Now())
	if err != nil {
		return nil, s.grpcErr("reserve", err)
	}
	return &pluginv1.ReserveResponse{WaitNs: int64(w)}, nil
}
