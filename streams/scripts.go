package streams

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
)

// Scripts are sent by SHA (EVALSHA). Redis forgets them on a restart, a
// failover to a replica that never ran them, or SCRIPT FLUSH; then the
// call is sent again whole (EVAL), which also loads the script on the
// node that holds the keys. This file is the one place that rule lives.

// noScript reports whether err is Redis saying it does not know a script.
func noScript(err error) bool { return redis.HasErrorPrefix(err, "NOSCRIPT") }

// scriptCall is one call of a script: its keys and arguments.
type scriptCall struct {
	keys []string
	args []any
}

// evalEach runs script once per call in one pipeline (on a Cluster,
// go-redis sends each node its part, in parallel), by SHA; when Redis does
// not know the script (restart, failover, SCRIPT FLUSH) the calls it
// refused go again whole. A call that Redis answered with an error (a key
// of another type, say) keeps its error; a failure of the connection is
// the returned error. extra queues commands of the caller's own in the
// first pipeline, after the calls (their replies are the caller's).
func (s *Store) evalEach(ctx context.Context, script *redis.Script, calls []scriptCall, extra ...func(redis.Pipeliner)) ([]*redis.Cmd, error) {
	cmds := make([]*redis.Cmd, len(calls))
	pipe := s.rdb.Pipeline()
	for i, c := range calls {
		cmds[i] = script.EvalSha(ctx, pipe, c.keys, c.args...)
	}
	for _, f := range extra {
		f(pipe)
	}
	_, execErr := pipe.Exec(ctx)
	var again []int
	for i, cmd := range cmds {
		if noScript(cmd.Err()) {
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		pipe := s.rdb.Pipeline()
		for _, i := range again {
			cmds[i] = script.Eval(ctx, pipe, calls[i].keys, calls[i].args...)
		}
		_, execErr = pipe.Exec(ctx)
	}
	for _, cmd := range cmds {
		// A pipeline that got no connection leaves its commands without
		// an error of their own: the pipeline's is theirs (cmdErr).
		var reply redis.Error
		if err := cmdErr(cmd.Err(), cmd.Val() == nil, execErr); err != nil && !errors.Is(err, redis.Nil) && !errors.As(err, &reply) {
			return nil, err // not Redis's answer: the connection failed
		}
	}
	return cmds, nil
}

// firstErr is the first error among cmds' own (not redis.Nil), or nil.
func firstErr(cmds []*redis.Cmd) error {
	for _, c := range cmds {
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	return nil
}
