package streams

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/failover"
)

// ErrNotReplicated is the error of an append that Redis stored but that
// not enough replicas confirmed within the ack timeout (Options.AckReplicas):
// the sender is told to resend with the same client_id, which dedup keeps
// single. Callers branch on it with errors.Is.
var ErrNotReplicated = errors.New("not confirmed by enough replicas in time")

// defaultAckTimeout bounds a WAIT when Options.AckTimeout is unset: long
// enough for a healthy replica on a LAN, short enough for a sender to retry.
const defaultAckTimeout = time.Second

// pipeliner is what appendOn sends a batch through: the Store's client, or
// one Cluster primary's client (appendByNode).
type pipeliner interface {
	Pipeline() redis.Pipeliner
}

// queueWait adds WAIT to pipe when acks wait for replicas, else returns
// nil. WAIT covers every write this connection made before it, and a
// pipeline runs on one connection, so one WAIT per batch suffices.
func (s *Store) queueWait(ctx context.Context, pipe redis.Pipeliner) *redis.IntCmd {
	if s.ackReplicas <= 0 {
		return nil
	}
	cmd := redis.NewIntCmd(ctx, "wait", s.ackReplicas, s.ackTimeout.Milliseconds())
	_ = pipe.Process(ctx, cmd) // queued: its reply comes with the pipeline's
	return cmd
}

// replicated turns c's success into ErrNotReplicated when its batch's WAIT
// did not confirm enough replicas. A duplicate counts too: its script
// rewrote the dedup key's expiry, so the WAIT also covers the first store.
func (s *Store) replicated(c *appendCall, wait *redis.IntCmd, execErr error) {
	if wait == nil || c.err != nil {
		return
	}
	n, err := wait.Result()
	if err == nil && n >= int64(s.ackReplicas) {
		return
	}
	if err == nil {
		err = fmt.Errorf("%w: %d of %d replicas within %s", ErrNotReplicated, n, s.ackReplicas, s.ackTimeout)
	} else {
		err = fmt.Errorf("%w: wait: %w", ErrNotReplicated, cmdErr(err, true, execErr))
	}
	s.notReplicated.Add(1)
	c.err = fmt.Errorf("append to %s: %w", s.keys.Messages(c.room), err)
}

// appendByNode stores a batch on a Cluster when acks wait for replicas: a
// WAIT must run on the connection that wrote, and a ClusterClient
// pipeline would send a keyless WAIT to one node only, so each primary
// gets its own pipeline (with its WAIT), sent in parallel. A slot that
// moved meanwhile fails its appends with MOVED (sent as unavailable; the
// sender resends), and such a failure reloads the slot map at once.
func (s *Store) appendByNode(ctx context.Context, cc *redis.ClusterClient, calls []*appendCall) {
	var order []*redis.Client
	byNode := map[*redis.Client][]*appendCall{}
	var rooms []string
	touched := map[string]bool{}
	for _, c := range calls {
		node, err := cc.MasterForKey(ctx, s.keys.Messages(c.room))
		if err != nil {
			c.err = fmt.Errorf("append to %s: %w", s.keys.Messages(c.room), err)
			continue
		}
		if byNode[node] == nil {
			order = append(order, node)
		}
		byNode[node] = append(byNode[node], c)
		if !touched[c.room] {
			touched[c.room] = true
			rooms = append(rooms, c.room)
		}
	}
	var wg sync.WaitGroup
	for _, node := range order {
		wg.Add(1)
		go func(node *redis.Client, calls []*appendCall) {
			defer wg.Done()
			s.appendOn(ctx, node, calls, false)
		}(node, byNode[node])
	}
	wg.Wait()
	pipe := cc.Pipeline()
	t := s.touch(ctx, pipe, calls, rooms)
	_, _ = pipe.Exec(ctx) // advisory: the rooms list and users' room indexes
	t.settle()
	for _, c := range calls {
		if failover.StaleSlotMap(c.err) {
			cc.ReloadState(ctx)
			break
		}
	}
}
