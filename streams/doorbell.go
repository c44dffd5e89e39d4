package streams

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Keyspace notifications as a doorbell (ModeNotify). Redis publishes an
// event on __keyspace@DB__:KEY for every XADD to KEY, from xroom, the HTTP
// API or a person at redis-cli. The event carries no data: it only says
// "read this room". One subscriber connection per Redis primary listens to
// the channels of the rooms this process tails; on a Cluster, events are
// published on the node that owns the key's slot, so each room's channels
// are subscribed there, and moved when the slot moves.

const (
	// notifyFlags are the notify-keyspace-events classes the doorbell
	// needs: K (keyspace channels) and t (stream commands).
	notifyFlags = "Kt"
	// bellPing is how long the subscriber connection may stay silent before
	// it is pinged; a second silent interval means it is dead even though
	// TCP did not say so, and it is made again.
	bellPing = 15 * time.Second
	// remapEvery is how often, on a Cluster, each tailed room's node is
	// looked up again (from go-redis's slot map: no Redis call), so its
	// doorbell follows slot migrations and failovers.
	remapEvery = time.Second
	// subscribeChunk bounds one SUBSCRIBE command's channels.
	subscribeChunk = 1000
)

// bell is one subscriber connection and the channels it should listen to.
type bell struct {
	h      *Hub
	addr   string // "" unless on a Cluster
	client redis.UniversalClient
	prefix string // "__keyspace@DB__:"
	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex
	ps    *redis.PubSub
	rooms map[string]*tailedRoom // channel -> room, as wanted
	have  map[string]bool        // channels subscribed (go-redis resubscribes them on reconnect)
	dirty map[string]struct{}    // channels whose wanted and subscribed state may differ
	kick  chan struct{}

	downSince atomic.Int64 // unix ns since the connection has been failing; 0 while it works
	lastErr   atomic.Pointer[error]

	// watch, when set, also listens to every room's stream by a pattern
	// (roomwatch.go); patterned is whether that is subscribed. Under mu.
	watch     *RoomWatch
	patterned string
}

func newBell(h *Hub, addr string, c redis.UniversalClient) *bell {
	db := 0
	if o, ok := c.(*redis.Client); ok {
		db = o.Options().DB
	}
	ctx, cancel := context.WithCancel(h.ctx)
	bl := &bell{h: h, addr: addr, client: c, prefix: "__keyspace@" + strconv.Itoa(db) + "__:", ctx: ctx, cancel: cancel,
		ps: c.Subscribe(ctx), rooms: map[string]*tailedRoom{}, have: map[string]bool{}, dirty: map[string]struct{}{}, kick: make(chan struct{}, 1)}
	h.wg.Add(2)
	go bl.receive()
	go bl.control()
	return bl
}

// commands is a client of the bell's node on the command pool, not on the
// tail's own connections, which may be what Redis refuses.
func (bl *bell) commands() redis.UniversalClient {
	if bl.addr == "" {
		return bl.h.store.rdb
	}
	return bl.client // a node of the command client (bells.nodeOf)
}

func (bl *bell) where() string {
	if bl.addr == "" {
		return ""
	}
	return " to " + bl.addr
}

func (bl *bell) want(r *tailedRoom) {
	bl.mu.Lock()
	for _, key := range []string{r.key, r.events.key} {
		ch := bl.prefix + key
		bl.rooms[ch] = r
		bl.dirty[ch] = struct{}{}
	}
	bl.mu.Unlock()
	bl.poke()
	// A channel another room of the same name already had is not
	// confirmed again: read once now.
	bl.h.tail.ring(r)
}

func (bl *bell) forget(r *tailedRoom) {
	bl.h.tail.unheard(r)
	bl.mu.Lock()
	for _, key := range []string{r.key, r.events.key} {
		ch := bl.prefix + key
		if bl.rooms[ch] == r {
			delete(bl.rooms, ch)
			bl.dirty[ch] = struct{}{}
		}
	}
	bl.mu.Unlock()
	bl.poke()
}

func (bl *bell) empty() bool {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	return len(bl.rooms) == 0
}

// setWatch makes the bell listen to every room for w (nil: stop).
func (bl *bell) setWatch(w *RoomWatch) {
	bl.mu.Lock()
	bl.watch = w
	bl.mu.Unlock()
	bl.poke()
}

func (bl *bell) watching() bool {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	return bl.watch != nil
}

// patternChange is the PSUBSCRIBE or PUNSUBSCRIBE due, if any. bl.mu must be held.
func (bl *bell) patternChange() (sub, unsub string) {
	want := ""
	if bl.watch != nil {
		want = bl.watch.pattern(bl.prefix)
	}
	if want == bl.patterned {
		return "", ""
	}
	unsub, bl.patterned = bl.patterned, want
	return want, unsub
}

func (bl *bell) poke() {
	select {
	case bl.kick <- struct{}{}:
	default:
	}
}

func (bl *bell) stop() {
	bl.cancel()
	bl.mu.Lock()
	ps := bl.ps
	bl.mu.Unlock()
	_ = ps.Close()
}

func (bl *bell) pubsub() *redis.PubSub {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	return bl.ps
}

// control brings the subscriptions in line with the rooms wanted, in a
// few SUBSCRIBE and UNSUBSCRIBE commands however many rooms changed.
func (bl *bell) control() {
	defer bl.h.wg.Done()
	if bl.addr != "" {
		// A Cluster node this instance starts listening to may be a replica
		// promoted since the start: Redis leaves out of CLUSTER SLOTS the
		// replicas that have replicated nothing yet, so the setup may not
		// have reached it. Its flags come before the first subscription,
		// whose confirmation reads the room: nothing added before is missed.
		ctx, cancel := context.WithTimeout(bl.ctx, bl.h.opt.CatchUpTimeout)
		if err := ensureNotify(ctx, bl.client); err != nil && bl.ctx.Err() == nil {
			bl.h.log.Warn("cannot turn on keyspace notifications on the Redis node"+bl.where()+"; its rooms are read by the sweep only", "err", err)
		}
		cancel()
	}
	for {
		select {
		case <-bl.ctx.Done():
			return
		case <-bl.kick:
		}
		bl.mu.Lock()
		var subs, unsubs []string
		for ch := range bl.dirty {
			want := bl.rooms[ch] != nil
			switch {
			case want && !bl.have[ch]:
				subs = append(subs, ch)
				bl.have[ch] = true
			case !want && bl.have[ch]:
				unsubs = append(unsubs, ch)
				delete(bl.have, ch)
			}
		}
		clear(bl.dirty)
		psub, punsub := bl.patternChange()
		ps := bl.ps
		bl.mu.Unlock()
		if psub != "" {
			_ = ps.PSubscribe(bl.ctx, psub)
		}
		if punsub != "" {
			_ = ps.PUnsubscribe(bl.ctx, punsub)
		}
		// Errors need no handling here: go-redis records the channels
		// either way and subscribes them again when it reconnects, which
		// the receiver notices.
		for len(subs) > 0 {
			n := min(len(subs), subscribeChunk)
			_ = ps.Subscribe(bl.ctx, subs[:n]...)
			subs = subs[n:]
		}
		for len(unsubs) > 0 {
			n := min(len(unsubs), subscribeChunk)
			_ = ps.Unsubscribe(bl.ctx, unsubs[:n]...)
			unsubs = unsubs[n:]
		}
	}
}

// receive turns notifications into reads. A confirmed subscription rings
// its room too: that covers entries added between the room's start (or the
// connection's loss) and the subscription taking effect, so a lost
// connection costs latency, never a message.
func (bl *bell) receive() {
	h := bl.h
	defer h.wg.Done()
	backoff := newBackoff()
	pinged := false
	for {
		ps := bl.pubsub()
		msg, err := ps.ReceiveTimeout(bl.ctx, bellPing)
		if bl.ctx.Err() != nil {
			return
		}
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if !pinged {
					pinged = true
					_ = ps.Ping(bl.ctx)
					continue
				}
				err = errors.New("no answer to a ping")
				bl.renew()
			}
			pinged = false
			bl.down(err)
			if !backoff.wait(bl.ctx) {
				return
			}
			continue
		}
		pinged = false
		backoff.reset()
		if bl.downSince.Swap(0) != 0 {
			// A new connection, maybe to a new primary (failover): make
			// sure it rings. The confirmations that follow ring every room.
			h.log.Info("Redis notification connection is back"+bl.where(), "rooms", len(bl.roomsNow()))
			ctx, cancel := context.WithTimeout(bl.ctx, h.opt.CatchUpTimeout)
			if err := ensureNotify(ctx, bl.client); err != nil {
				h.log.Warn("cannot check keyspace notifications on the Redis node"+bl.where(), "err", err)
			}
			cancel()
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			switch m.Kind {
			case "subscribe":
				bl.confirmed(m.Channel)
				bl.ring(m.Channel)
			case "psubscribe":
				if w := bl.watcher(); w != nil {
					w.subscribed()
				}
			}
		case *redis.Message:
			if m.Pattern != "" { // the room watch's; a tailed room also gets its own channel's
				if w := bl.watcher(); w != nil && m.Payload == "xadd" {
					w.heardKey(strings.TrimPrefix(m.Channel, bl.prefix))
				}
				continue
			}
			h.stats.Rings.Add(1)
			if m.Payload == "xadd" {
				bl.added(m.Channel)
				continue
			}
			bl.ring(m.Channel)
		}
	}
}

func (bl *bell) watcher() *RoomWatch {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	return bl.watch
}

func (bl *bell) ring(channel string) {
	if r, _ := bl.roomOf(channel); r != nil {
		bl.h.tail.ring(r)
	}
}

// added rings for an XADD: on the room's messages channel, one a read back
// may have covered (readback.go).
func (bl *bell) added(channel string) {
	switch r, messages := bl.roomOf(channel); {
	case r == nil:
	case messages:
		bl.h.tail.added(r)
	default:
		bl.h.tail.ring(r)
	}
}

// confirmed notes that the room's messages channel is subscribed on this
// connection: from here its XADDs' events arrive, in order (readback.go).
func (bl *bell) confirmed(channel string) {
	if r, messages := bl.roomOf(channel); r != nil && messages {
		r.bellGen.Store(bl.h.bellGens.Add(1))
	}
}

// roomOf is the room of a channel, and whether it is the room's messages
// channel (not its events one).
func (bl *bell) roomOf(channel string) (r *tailedRoom, messages bool) {
	bl.mu.Lock()
	r = bl.rooms[channel]
	bl.mu.Unlock()
	return r, r != nil && channel == bl.prefix+r.key
}

// down records that the connection failed; once, until it works again.
func (bl *bell) down(err error) {
	bl.h.tail.unheard(bl.roomsNow()...)
	bl.lastErr.Store(&err)
	if bl.downSince.CompareAndSwap(0, time.Now().UnixNano()) {
		bl.h.stats.Reconnects.Add(1)
		bl.h.log.Warn("Redis notification connection lost"+bl.where()+"; reconnecting", "err", err)
	}
}

// renew replaces a connection that stopped answering with a new one,
// subscribed to every channel wanted.
func (bl *bell) renew() {
	bl.mu.Lock()
	old := bl.ps
	bl.ps = bl.client.Subscribe(bl.ctx)
	clear(bl.have)
	bl.patterned = ""
	for ch := range bl.rooms {
		bl.dirty[ch] = struct{}{}
	}
	bl.mu.Unlock()
	bl.h.tail.unheard(bl.roomsNow()...)
	_ = old.Close()
	bl.poke()
}

func (bl *bell) roomsNow() []*tailedRoom {
	bl.mu.Lock()
	defer bl.mu.Unlock()
	seen := map[*tailedRoom]bool{}
	var out []*tailedRoom
	for _, r := range bl.rooms {
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}
