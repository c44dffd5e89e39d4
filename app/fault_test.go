package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/streams"
)

// Process-level fault tests: real xroom binaries on real redis-server
// processes that are restarted, flushed, or whose xroom is killed. The
// property is always the same: every acknowledged message reaches every
// client exactly once, in stream order, with its content.

// replyWait bounds how long a send may wait for its ack or error, whatever
// Redis is doing: a hang fails the test.
const replyWait = 20 * time.Second

// peer is a chat client that keeps what it received, survives its server
// going away (it reconnects with since and epoch), and reports problems as
// errors so it can run on its own goroutine.
type peer struct {
	room, user string
	conn       *websocket.Conn
	msgs       []testkit.Frame // message frames, in arrival order
	epoch      string
	gaps       []testkit.Frame
	slowest    time.Duration // the longest a send waited for its reply
}

func (p *peer) lastID() string {
	if len(p.msgs) == 0 {
		return "0"
	}
	return p.msgs[len(p.msgs)-1].ID
}

// connect dials base; with resume, it asks for what came after the last
// message it has (since) in the epoch it knows. It reads up to ready.
func (p *peer) connect(base string, resume bool) error {
	q := url.Values{"user": {p.user}}
	if resume {
		q.Set("since", p.lastID())
		if p.epoch != "" {
			q.Set("epoch", p.epoch)
		}
	} else {
		q.Set("since", "0")
	}
	conn, _, err := testkit.DialChat(base, p.room, q.Encode(), true, nil)
	if err != nil {
		return fmt.Errorf("%s: dial %s?%s: %w", p.user, p.room, q.Encode(), err)
	}
	if p.conn != nil {
		p.conn.Close()
	}
	p.conn = conn
	for {
		f, err := p.read(replyWait)
		if err != nil {
			return err
		}
		switch f.Type {
		case "ready":
			p.epoch = f.Epoch
			return nil
		case "gap", "message":
		default:
			return fmt.Errorf("%s: %+v before ready", p.user, f)
		}
	}
}

// read reads one frame, recording messages and gaps. Presence frames are
// not what these tests are about: it reads past them.
func (p *peer) read(d time.Duration) (testkit.Frame, error) {
	var f testkit.Frame
	_ = p.conn.SetReadDeadline(time.Now().Add(d))
	for f.Type == "" || f.Type == "presence" {
		f = testkit.Frame{}
		_, data, err := p.conn.ReadMessage()
		if err != nil {
			return f, fmt.Errorf("%s: read: %w", p.user, err)
		}
		if err := json.Unmarshal(data, &f); err != nil || f.Type == "" {
			return f, fmt.Errorf("%s: bad frame %q", p.user, data)
		}
	}
	switch f.Type {
	case "message":
		p.msgs = append(p.msgs, f)
	case "gap":
		switch f.Reason {
		case "reset":
			p.msgs = nil // a new history: what came before is gone
		case "rolled_back": // a failover lost what came after oldest_id
			for len(p.msgs) > 0 && idAfter(p.msgs[len(p.msgs)-1].ID, f.OldestID) {
				p.msgs = p.msgs[:len(p.msgs)-1]
			}
		}
		p.gaps = append(p.gaps, f)
	}
	return f, nil
}

// sendUntilAcked sends text under cid until it is acknowledged, resending
// (same client_id) after `unavailable` errors and, when the connection
// breaks, after reconnect() gives it a new one (nil: a broken connection
// is a failure). Every send must be answered within replyWait. It returns
// the acked ID and how many error frames came first.
func (p *peer) sendUntilAcked(text, cid string, reconnect func() error) (id string, refused int, err error) {
	frame, _ := json.Marshal(map[string]string{"type": "message", "message": text, "client_id": cid})
	deadline := time.Now().Add(2 * time.Minute)
	for attempt := 0; time.Now().Before(deadline); attempt++ {
		if attempt > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		var f testkit.Frame
		start := time.Now()
		err := p.conn.WriteMessage(websocket.TextMessage, frame)
		if err == nil {
			f, err = p.replyTo(cid)
		}
		p.slowest = max(p.slowest, time.Since(start))
		if err != nil {
			if errors.Is(err, errNoReply) || reconnect == nil {
				return "", refused, err
			}
			if err := reconnect(); err != nil {
				return "", refused, err
			}
			continue
		}
		if f.Type == "ack" {
			return f.ID, refused, nil
		}
		if f.Code != "unavailable" {
			return "", refused, fmt.Errorf("%s: send %s refused: %+v", p.user, cid, f)
		}
		refused++
	}
	return "", refused, fmt.Errorf("%s: %s not acked within 2 minutes", p.user, cid)
}

var errNoReply = errors.New("no reply within the bound")

// replyTo reads until the ack or error for cid, within replyWait.
func (p *peer) replyTo(cid string) (testkit.Frame, error) {
	deadline := time.Now().Add(replyWait)
	for {
		f, err := p.read(time.Until(deadline))
		if err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				return f, fmt.Errorf("%s: %w for %s", p.user, errNoReply, cid)
			}
			return f, err
		}
		switch {
		case f.Type == "message" || f.Type == "gap":
		case (f.Type == "ack" || f.Type == "error") && f.ClientID == cid:
			return f, nil
		default:
			return f, fmt.Errorf("%s: waiting for %s, got %+v", p.user, cid, f)
		}
	}
}

// drain reads until the peer has n messages.
func (p *peer) drain(n int) error {
	for len(p.msgs) < n {
		if _, err := p.read(replyWait); err != nil {
			return fmt.Errorf("%s has %d of %d messages: %w", p.user, len(p.msgs), n, err)
		}
	}
	return nil
}

// checkSequence compares what a peer received with the stream in Redis:
// the same IDs in the same order, each once, with the stored content.
func checkSequence(t *testing.T, who string, got []testkit.Frame, want []testkit.Frame) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s got %d messages, the stream holds %d", who, len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		g, w := got[i], want[i]
		if g.ID != w.ID || g.Message != w.Message || g.ClientID != w.ClientID || g.User != w.User {
			t.Errorf("%s: message %d is %+v, the stream has %+v", who, i, g, w)
			return
		}
	}
}

// streamOf reads the room's stream straight from Redis.
func streamOf(t *testing.T, rs *redistest.Server, prefix, room string) []testkit.Frame {
	t.Helper()
	msgs, err := rs.Client(t).XRange(context.Background(), streams.Keys{Prefix: prefix}.Messages(room), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	return toFrames(msgs)
}

// toFrames turns stream entries into the frames clients should have got.
func toFrames(msgs []redis.XMessage) []testkit.Frame {
	out := make([]testkit.Frame, len(msgs))
	for i, m := range msgs {
		s := func(k string) string { v, _ := m.Values[k].(string); return v }
		out[i] = testkit.Frame{Type: "message", ID: m.ID, User: s("user"), Message: s("message"), ClientID: s("client_id")}
	}
	return out
}

// checkAcked checks that every acked client_id is in the stream once, under its acked ID.
func checkAcked(t *testing.T, stream []testkit.Frame, acked map[string]string) {
	t.Helper()
	byCID := map[string]string{}
	for _, f := range stream {
		if prev, ok := byCID[f.ClientID]; ok {
			t.Errorf("client_id %s stored twice: %s and %s", f.ClientID, prev, f.ID)
		}
		byCID[f.ClientID] = f.ID
	}
	for cid, id := range acked {
		if byCID[cid] != id {
			t.Errorf("%s acked as %s, the stream has %q", cid, id, byCID[cid])
		}
	}
	if len(stream) != len(acked) {
		t.Errorf("the stream holds %d entries, %d were acked", len(stream), len(acked))
	}
}

// load is clients sending numbered messages in a loop, each until acked,
// until stopped: the traffic the fault tests inject faults into.
type load struct {
	mu       sync.Mutex
	acked    map[string]string    // client_id -> acked ID
	ackedAt  []time.Time          // when each ack came, in order
	ackTime  map[string]time.Time // acked ID -> when its ack came
	refused  int                  // error frames before acks
	wg       sync.WaitGroup
	failures chan error
	progress chan struct{} // one per ack
	stop     chan struct{}
}

func newLoad() *load {
	return &load{acked: map[string]string{}, ackTime: map[string]time.Time{}, failures: make(chan error, 100), progress: make(chan struct{}, 100000), stop: make(chan struct{})}
}

// send starts c sending; reconnect (may be nil) gives it a new connection
// when its own breaks.
func (l *load) send(c *peer, reconnect func() error) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			cid := fmt.Sprintf("%s-%d", c.user, i)
			id, n, err := c.sendUntilAcked("text of "+cid, cid, reconnect)
			if err != nil {
				l.failures <- err
				return
			}
			l.mu.Lock()
			l.acked[cid] = id
			l.ackedAt = append(l.ackedAt, time.Now())
			l.ackTime[id] = time.Now()
			l.refused += n
			l.mu.Unlock()
			l.progress <- struct{}{}
		}
	}()
}

// acks waits for n more acks (after those already counted).
func (l *load) acks(n int) {
	for len(l.progress) > 0 {
		<-l.progress
	}
	for range n {
		<-l.progress
	}
}

// end stops the senders and fails t if any failed.
func (l *load) end(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	close(l.failures)
	for err := range l.failures {
		t.Fatal(err)
	}
}

// TestFaultRedisRestartedWithAOF: Redis (appendfsync always) is stopped and
// started again while clients send in a loop. Sends are answered, with
// `unavailable` errors while Redis is down, never left hanging; the server
// reconnects by itself; resending the unacked client_ids stores each once;
// every client ends with the whole stream.
func TestFaultRedisRestartedWithAOF(t *testing.T) {
	rs := redistest.Start(t, redistest.WithAOF())
	prefix := redistest.Prefix(t)
	p := startProc(t, map[string]string{"REDIS_URL": rs.URL(), "CHAT_PREFIX": prefix, "ADDR": "127.0.0.1:0"})
	senders := []*peer{{room: "aof", user: "s1"}, {room: "aof", user: "s2"}}
	watcher := &peer{room: "aof", user: "w"}
	for _, c := range append(senders, watcher) {
		if err := c.connect(p.base, false); err != nil {
			t.Fatal(err)
		}
	}

	l := newLoad()
	for _, s := range senders {
		l.send(s, nil)
	}
	// Some traffic first, then Redis goes away for a while and comes back
	// on the same port with its AOF.
	l.acks(10)
	rs.Stop(t)
	// Longer than a send's Redis timeout (5 s), so sends fail while it lasts.
	time.Sleep(6 * time.Second)
	rs.Restart(t)
	l.acks(10)
	l.end(t)
	if l.refused == 0 {
		t.Errorf("no send was refused while Redis was down")
	}
	for _, s := range senders {
		if s.slowest > 10*time.Second {
			t.Errorf("%s waited %v for a reply", s.user, s.slowest)
		}
	}
	t.Logf("%d sends refused with unavailable while Redis was down; slowest replies %v, %v", l.refused, senders[0].slowest, senders[1].slowest)

	stream := streamOf(t, rs, prefix, "aof")
	checkAcked(t, stream, l.acked)
	for _, c := range append(senders, watcher) {
		if err := c.drain(len(stream)); err != nil {
			t.Fatal(err)
		}
		checkSequence(t, c.user, c.msgs, stream)
	}
}

// TestFaultServerKilled: two xroom processes on one Redis; one is killed
// with SIGKILL while its clients send. They reconnect to the other with
// since (and epoch), resend what was not acked under the same client_id,
// and every client ends with the whole stream, each message once.
func TestFaultServerKilled(t *testing.T) {
	rs := redistest.Shared(t)
	prefix := redistest.Prefix(t)
	env := map[string]string{"REDIS_URL": rs.URL(), "CHAT_PREFIX": prefix, "ADDR": "127.0.0.1:0"}
	victim, survivor := startProc(t, env), startProc(t, env)
	onVictim := []*peer{{room: "kill", user: "v1"}, {room: "kill", user: "v2"}}
	onSurvivor := &peer{room: "kill", user: "s1"}
	for _, c := range onVictim {
		if err := c.connect(victim.base, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := onSurvivor.connect(survivor.base, false); err != nil {
		t.Fatal(err)
	}

	l := newLoad()
	reconnects := make([]int, len(onVictim))
	for i, c := range onVictim {
		l.send(c, func() error {
			reconnects[i]++
			return c.connect(survivor.base, true) // the load balancer's other instance
		})
	}
	l.send(onSurvivor, nil)
	l.acks(30)
	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	victim.wait(10 * time.Second)
	l.acks(30)
	l.end(t)
	for i, n := range reconnects {
		if n != 1 {
			t.Errorf("%s reconnected %d times, want once", onVictim[i].user, n)
		}
	}

	stream := streamOf(t, rs, prefix, "kill")
	checkAcked(t, stream, l.acked)
	for _, c := range append(onVictim, onSurvivor) {
		if err := c.drain(len(stream)); err != nil {
			t.Fatal(err)
		}
		if len(c.gaps) > 0 {
			t.Errorf("%s got gaps %+v", c.user, c.gaps)
		}
		checkSequence(t, c.user, c.msgs, stream)
	}
}

// TestFaultRoomDataLost: Redis loses the room, by FLUSHALL or by a restart
// without persistence. A client that comes back with its old epoch gets
// `gap` reason `reset` before anything else, then exactly the new history
// (nothing Redis no longer has, even though the server was tailing the
// room all along for a client that stayed), then `ready` with a new epoch.
func TestFaultRoomDataLost(t *testing.T) {
	for _, how := range []string{"FLUSHALL", "restart without persistence"} {
		t.Run(how, func(t *testing.T) {
			rs := redistest.Start(t) // no AOF, no RDB
			prefix := redistest.Prefix(t)
			p := startProc(t, map[string]string{"REDIS_URL": rs.URL(), "CHAT_PREFIX": prefix, "ADDR": "127.0.0.1:0"})
			stay := &peer{room: "lost", user: "stay"} // keeps the room tailed throughout
			back := &peer{room: "lost", user: "back"}
			for _, c := range []*peer{stay, back} {
				if err := c.connect(p.base, false); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 5 {
				if _, _, err := back.sendUntilAcked(fmt.Sprintf("old %d", i), fmt.Sprintf("old-%d", i), nil); err != nil {
					t.Fatal(err)
				}
			}
			if err := stay.drain(5); err != nil {
				t.Fatal(err)
			}
			if err := back.drain(5); err != nil {
				t.Fatal(err)
			}
			oldEpoch, lastOld := back.epoch, back.lastID()
			back.conn.Close()

			if how == "FLUSHALL" {
				rs.CLI(t, "FLUSHALL")
			} else {
				rs.Restart(t)
			}
			// New history, written through the server once it has reconnected.
			for i := range 3 {
				if _, _, err := stay.sendUntilAcked(fmt.Sprintf("new %d", i), fmt.Sprintf("new-%d", i), nil); err != nil {
					t.Fatal(err)
				}
			}
			stream := streamOf(t, rs, prefix, "lost")
			if len(stream) != 3 {
				t.Fatalf("the stream holds %d entries, want the 3 new ones", len(stream))
			}

			// Back with since and the old epoch.
			q := url.Values{"user": {"back"}, "since": {lastOld}, "epoch": {oldEpoch}}
			conn, _, err := testkit.DialChat(p.base, "lost", q.Encode(), true, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			c := &peer{room: "lost", user: "back", conn: conn}
			first, err := c.read(replyWait)
			if err != nil {
				t.Fatal(err)
			}
			if first.Type != "gap" || first.Reason != "reset" || first.OldestID != stream[0].ID {
				t.Fatalf("first frame %+v, want gap reset with oldest_id %s", first, stream[0].ID)
			}
			if err := c.drain(3); err != nil {
				t.Fatal(err)
			}
			checkSequence(t, "back", c.msgs, stream)
			r, err := c.read(replyWait)
			if err != nil {
				t.Fatal(err)
			}
			if r.Type != "ready" || r.Epoch == oldEpoch || r.Epoch == "" || r.LastID != stream[2].ID {
				t.Fatalf("got %+v, want ready with a new epoch and last_id %s", r, stream[2].ID)
			}
			// The client that stayed has the old messages and then the new ones, once each.
			if err := stay.drain(8); err != nil {
				t.Fatal(err)
			}
			checkSequence(t, "stay (after the loss)", stay.msgs[5:], stream)
		})
	}
}
