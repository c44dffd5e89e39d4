package failover

import (
	"context"
	"errors"
	"io"
	"net"

	"github.com/redis/go-redis/v9"
)

// ReloadOnFailure makes cc reload its slot map as soon as a command fails
// in a way that says the map may be stale: a node that cannot be reached or
// answered nothing (it may have died, and a replica may own its slots now),
// or MOVED, ASK, CLUSTERDOWN, TRYAGAIN, READONLY. go-redis alone reloads on
// MOVED, and otherwise only when its map is 10 s old, so after a primary
// dies sends kept failing for up to 10 s after its replica was promoted.
// Reloads are asynchronous and go-redis runs at most one at a time.
func ReloadOnFailure(cc *redis.ClusterClient) {
	cc.AddHook(reloadHook{cc})
}

type reloadHook struct{ cc *redis.ClusterClient }

func (h reloadHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h reloadHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if StaleSlotMap(err) {
			h.cc.ReloadState(ctx)
		}
		return err
	}
}

func (h reloadHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		stale := StaleSlotMap(err)
		for _, c := range cmds {
			stale = stale || StaleSlotMap(c.Err())
		}
		if stale {
			h.cc.ReloadState(ctx)
		}
		return err
	}
}

// staleReplies are the error replies after which a Cluster slot map may be
// out of date.
var staleReplies = []string{"MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN", "READONLY"}

// StaleSlotMap reports an error after which a Cluster client should reload
// its slot map: a network failure or one of staleReplies. A caller's own
// deadline or cancellation is not one.
func StaleSlotMap(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, redis.Nil) {
		return false
	}
	for _, p := range staleReplies {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &oe) || errors.As(err, &ne) || errors.Is(err, net.ErrClosed) || isEOF(err)
}

func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
