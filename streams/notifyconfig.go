package streams

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/failover"
)

// How the hub chooses its tail mode, and turns keyspace notifications on.

// setup chooses the tail mode: ModeNotify when keyspace notifications
// can be turned on everywhere, else a fallback that keeps the connection
// bound. It retries while Redis cannot be reached.
func (h *Hub) setup() {
	defer h.wg.Done()
	mode := h.opt.Mode
	_, cluster := h.store.rdb.(*redis.ClusterClient)
	fallback := ModeBlocking
	if cluster {
		fallback = ModePoll
	}
	backoff := newBackoff()
	for mode == ModeAuto || mode == ModeNotify {
		err := h.configureNotify(h.ctx)
		if err == nil {
			mode = ModeNotify
			break
		}
		if h.ctx.Err() != nil {
			return
		}
		if refused(err) {
			if mode == ModeNotify {
				h.log.Error("TAIL_MODE=notify, but keyspace notifications cannot be turned on: set notify-keyspace-events to include K and t on every Redis node", "err", err)
				break
			}
			mode = fallback
			h.log.Warn("Redis refused to turn on keyspace notifications; tailing rooms without them",
				"err", err, "mode", mode.String(),
				"fix", "set notify-keyspace-events to include K and t (for example \"Kt\") on every Redis node, and restart xroom")
			break
		}
		h.log.Warn("cannot reach Redis to set up the tail; retrying", "err", err)
		if !backoff.wait(h.ctx) {
			return
		}
	}
	h.mode.Store(int32(mode))
	if mode == ModeNotify && !cluster && !sentinel(h.store.rdb) && !h.opt.NoReadBack && h.store.ackReplicas == 0 {
		h.store.tail.CompareAndSwap(nil, h) // one hub per store reads back (readback.go)
	}
	close(h.modeSet)
	h.log.Info("tailing rooms", "mode", mode.String())
	switch {
	case mode == ModeNotify && cluster:
		h.wg.Add(1)
		go h.bells.follow()
	case mode == ModeNotify && sentinel(h.store.rdb):
		h.wg.Add(1)
		go h.bells.followPrimary()
	}
}

// configureNotify turns the doorbell's flags on at every node that is or
// may become a primary (a Cluster's replicas too, so a promoted replica
// rings at once), keeping the flags already set.
func (h *Hub) configureNotify(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, h.opt.CatchUpTimeout)
	defer cancel()
	if cc, ok := h.store.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachShard(ctx, func(ctx context.Context, c *redis.Client) error {
			return ensureNotify(ctx, c)
		})
	}
	return ensureNotify(ctx, h.store.rdb)
}

// ensureNotify adds notifyFlags to a node's notify-keyspace-events,
// never removing a flag someone else set.
func ensureNotify(ctx context.Context, c redis.Cmdable) error {
	cur, err := c.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err != nil {
		return fmt.Errorf("CONFIG GET notify-keyspace-events: %w", err)
	}
	have, ok := cur["notify-keyspace-events"]
	if !ok {
		return errors.New("CONFIG GET notify-keyspace-events: no such setting")
	}
	want := withNotifyFlags(have)
	if want == have {
		return nil
	}
	if err := c.ConfigSet(ctx, "notify-keyspace-events", want).Err(); err != nil {
		return fmt.Errorf("CONFIG SET notify-keyspace-events %s: %w", want, err)
	}
	return nil
}

// withNotifyFlags returns flags with notifyFlags added ('A' covers 't').
func withNotifyFlags(flags string) string {
	out := flags
	for _, f := range notifyFlags {
		if strings.ContainsRune(flags, f) || f == 't' && strings.ContainsRune(flags, 'A') {
			continue
		}
		out += string(f)
	}
	return out
}

// refused tells a Redis that will not do what was asked (CONFIG renamed
// away, an ACL, a server without the command) from one that cannot be
// reached or is busy: only the first is a reason to fall back.
func refused(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	for _, transient := range []string{"LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "ERR max number of clients"} {
		if strings.HasPrefix(err.Error(), transient) || strings.Contains(err.Error(), ": "+transient) {
			return false
		}
	}
	return true
}

// sentinel tells a client that goes through Sentinel (go-redis's own, or
// internal/failover's, each naming its address so), whose primary can
// change under it.
func sentinel(c redis.UniversalClient) bool {
	o, ok := c.(*redis.Client)
	return ok && (o.Options().Addr == "FailoverClient" || failover.IsSentinelAddr(o.Options().Addr))
}
