package streams

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Encoder turns an entry into the bytes sent to clients. The Hub calls it
// once per entry, and every connection in the room sends the same bytes.
type Encoder func(room string, e *Entry) []byte

// HubOptions configure a Hub.
type HubOptions struct {
	Encode Encoder
	// EncodeEvent encodes presence events (see events.go); nil leaves them without a Frame.
	EncodeEvent EventEncoder
	// Buffer is how many recent entries each tailed room keeps in memory.
	// A connection further behind than that catches up from Redis instead,
	// so a slow client costs Redis reads, never unbounded memory.
	Buffer int
	// ReadCount is the most entries one tail read asks for.
	ReadCount int
	// Block is how long one XREAD BLOCK waits; a room nobody is in stops
	// being tailed within this time.
	Block time.Duration
	// CatchUpTimeout bounds one Redis read by a subscriber behind the
	// buffer, so a stalled Redis delays it, never hangs it.
	CatchUpTimeout time.Duration
	Logger         *slog.Logger
}

const (
	defaultBuffer    = 1024
	defaultReadCount = 1000
	defaultBlock     = 5 * time.Second
	defaultCatchUp   = 5 * time.Second
	// maxBackoff bounds the wait between retries while Redis is unreachable.
	maxBackoff = 2 * time.Second
)

// Hub tails rooms and fans their entries out to subscribers. Each room that
// has subscribers in this process is read by one goroutine with one XREAD
// BLOCK at a time, however many subscribers it has: the Redis connections
// of a process grow with its active rooms, never with its clients.
type Hub struct {
	store    *Store
	blocking redis.UniversalClient
	opt      HubOptions
	log      *slog.Logger
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu    sync.Mutex
	rooms map[string]*tailedRoom

	stats HubStats
	lag   prometheus.Histogram // tail read lag, see metrics.go
}

// HubStats counts what the hub did, for metrics and tests.
type HubStats struct {
	TailReads  atomic.Int64 // XREAD calls that returned entries
	TailErrors atomic.Int64 // failed tail reads
	CatchUps   atomic.Int64 // reads from Redis by a subscriber behind the buffer
	Skipped    atomic.Int64 // entries without a message field
	Gaps       atomic.Int64 // catch-up reads that found entries lost to trimming (gap.go)
}

// NewHub returns a hub reading rooms through store, with blocking reads on
// their own client (one connection per tailed room), which the hub closes
// when it is closed.
func NewHub(store *Store, blocking redis.UniversalClient, opt HubOptions) *Hub {
	if opt.Buffer <= 0 {
		opt.Buffer = defaultBuffer
	}
	if opt.ReadCount <= 0 {
		opt.ReadCount = defaultReadCount
	}
	if opt.Block <= 0 {
		opt.Block = defaultBlock
	}
	if opt.CatchUpTimeout <= 0 {
		opt.CatchUpTimeout = defaultCatchUp
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Encode == nil {
		opt.Encode = func(string, *Entry) []byte { return nil }
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Hub{store: store, blocking: blocking, opt: opt, log: opt.Logger, ctx: ctx, cancel: cancel, rooms: map[string]*tailedRoom{}, lag: newLagHistogram()}
}

// Stats returns the hub's counters.
func (h *Hub) Stats() *HubStats { return &h.stats }

// Store returns the store the hub reads.
func (h *Hub) Store() *Store { return h.store }

// Encode encodes e as the hub does for live entries.
func (h *Hub) Encode(room string, e *Entry) {
	if e.HasMessage {
		e.Frame = h.opt.Encode(room, e)
	}
}

// Close stops every tail and closes the blocking client.
func (h *Hub) Close() error {
	h.mu.Lock() // Subscribe starts tails under mu: none starts after this
	h.cancel()
	h.mu.Unlock()
	err := h.blocking.Close() // unblocks reads in flight
	h.wg.Wait()
	return err
}

// tailedRoom is one room being tailed: the recent entries and who wants them.
type tailedRoom struct {
	name  string
	key   string
	ready chan struct{} // closed once the starting position is known

	mu   sync.RWMutex
	subs []*Subscription // copy-on-write: the tail notifies a snapshot without locking
	// ring holds the newest entries in order. Every entry after base up to
	// head is in it, so a subscriber at or after base is served from memory.
	ring  []*Entry
	start int // index of the oldest entry in ring
	n     int
	base  ID
	head  ID

	events eventRing // presence events, read by the same XREAD (events.go)
	// epoch is the incarnation of the room's history the ring belongs to,
	// as the last subscriber to look found it in Redis (see Subscription.Epoch).
	epoch string
}

// Subscription is one subscriber's view of a room.
type Subscription struct {
	hub    *Hub
	room   *tailedRoom
	notify func()
	gap    catchUpGap // gap.go
}

// Subscribe starts delivering notifications for room: notify is called,
// from the tail goroutine, whenever new entries may be available; it must
// not block. It waits until the room's tail knows its starting position.
func (h *Hub) Subscribe(ctx context.Context, room string, notify func()) (*Subscription, error) {
	h.mu.Lock()
	if h.ctx.Err() != nil {
		h.mu.Unlock()
		return nil, errors.New("hub closed")
	}
	r := h.rooms[room]
	if r == nil {
		r = &tailedRoom{name: room, key: h.store.keys.Messages(room), ready: make(chan struct{}), ring: make([]*Entry, h.opt.Buffer)}
		r.events.key = h.store.keys.Events(room)
		h.rooms[room] = r
		h.wg.Add(1)
		go h.tail(r)
	}
	sub := &Subscription{hub: h, room: r, notify: notify}
	r.mu.Lock()
	r.subs = append(r.subs[:len(r.subs):len(r.subs)], sub)
	r.mu.Unlock()
	h.mu.Unlock()

	select {
	case <-r.ready:
		return sub, nil
	case <-ctx.Done():
		sub.Close()
		return nil, ctx.Err()
	case <-h.ctx.Done():
		sub.Close()
		return nil, errors.New("hub closed")
	}
}

// Close stops notifications. The room stops being tailed once nobody is subscribed.
func (s *Subscription) Close() {
	r := s.room
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, x := range r.subs {
		if x == s {
			subs := make([]*Subscription, 0, len(r.subs)-1)
			r.subs = append(append(subs, r.subs[:i]...), r.subs[i+1:]...)
			return
		}
	}
}

// Epoch tells the room's tail which incarnation of the room's history the
// caller found in Redis (Store.Epoch). When it differs from the one seen
// before, Redis lost the room (FLUSHALL, a restart without persistence):
// the entries in memory are gone from Redis, so they are dropped and
// subscribers behind the tail read what Redis holds now.
func (s *Subscription) Epoch(epoch string) {
	r := s.room
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.epoch != "" && r.epoch != epoch {
		clear(r.ring)
		r.start, r.n, r.base = 0, 0, r.head
	}
	r.epoch = epoch
}

// Head is the newest ID the room's tail has read: a point up to which the
// history already exists.
func (s *Subscription) Head() ID {
	s.room.mu.RLock()
	defer s.room.mu.RUnlock()
	return s.room.head
}

// Next fills dst (up to its capacity) with the entries after cursor, in
// order, and returns them with the new cursor. It serves from memory when
// it can and reads Redis (within CatchUpTimeout) when cursor is behind the
// room's buffer. Entries
// without a message are included (so the cursor passes them) with no Frame.
// When a read from Redis finds entries after cursor trimmed away, Gap says so.
func (s *Subscription) Next(ctx context.Context, cursor ID, dst []*Entry) ([]*Entry, ID, error) {
	r := s.room
	dst = dst[:0]
	max := cap(dst)
	if max == 0 {
		max = 1
	}
	r.mu.RLock()
	if !cursor.Less(r.base) {
		dst = r.after(cursor, dst, max)
		r.mu.RUnlock()
		if len(dst) > 0 {
			cursor = dst[len(dst)-1].ID
		}
		return dst, cursor, nil
	}
	base := r.base
	r.mu.RUnlock()

	s.hub.stats.CatchUps.Add(1)
	ctx, cancel := context.WithTimeout(ctx, s.hub.opt.CatchUpTimeout)
	defer cancel()
	es, err := s.hub.store.Range(ctx, r.name, cursor, max)
	if err == nil {
		err = s.checkGap(ctx, cursor, es) // announced before es (Subscription.Gap)
	}
	if err != nil {
		return dst, cursor, err
	}
	if len(es) == 0 {
		// Nothing retained between cursor and the buffer (trimmed or
		// deleted): continue from the buffer.
		return dst, base, nil
	}
	for i := range es {
		s.hub.Encode(r.name, &es[i])
		dst = append(dst, &es[i])
	}
	return dst, es[len(es)-1].ID, nil
}

// Read is Next without the buffer: up to cap(dst) entries after cursor,
// straight from Redis, and the new cursor (cursor itself when Redis has
// nothing newer). A joining connection uses it when the buffer has nothing
// for it yet but the replay is not done: the room's tail may not have read
// that far, and only Redis can tell that from a stream that was reset.
func (s *Subscription) Read(ctx context.Context, cursor ID, dst []*Entry) ([]*Entry, ID, error) {
	dst = dst[:0]
	ctx, cancel := context.WithTimeout(ctx, s.hub.opt.CatchUpTimeout)
	defer cancel()
	es, err := s.hub.store.Range(ctx, s.room.name, cursor, max(cap(dst), 1))
	if err != nil || len(es) == 0 {
		return dst, cursor, err
	}
	for i := range es {
		s.hub.Encode(s.room.name, &es[i])
		dst = append(dst, &es[i])
	}
	return dst, es[len(es)-1].ID, nil
}

// after appends to dst up to max ring entries newer than cursor. r.mu must be held.
func (r *tailedRoom) after(cursor ID, dst []*Entry, max int) []*Entry {
	// Binary search for the first entry newer than cursor.
	lo, hi := 0, r.n
	for lo < hi {
		mid := (lo + hi) / 2
		if cursor.Less(r.at(mid).ID) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	for i := lo; i < r.n && len(dst) < max; i++ {
		dst = append(dst, r.at(i))
	}
	return dst
}

func (r *tailedRoom) at(i int) *Entry { return r.ring[(r.start+i)%len(r.ring)] }

// push adds entries read by the tail. r.mu must be held.
func (r *tailedRoom) push(es []*Entry) {
	for _, e := range es {
		if r.n == len(r.ring) {
			r.base = r.ring[r.start].ID
			r.ring[r.start] = nil
			r.start = (r.start + 1) % len(r.ring)
			r.n--
		}
		r.ring[(r.start+r.n)%len(r.ring)] = e
		r.n++
		r.head = e.ID
	}
}

// tail reads one room for as long as it has subscribers.
func (h *Hub) tail(r *tailedRoom) {
	defer h.wg.Done()
	log := h.log.With("room", r.name)
	backoff := newBackoff()
	for {
		last, events, err := h.store.heads(h.ctx, r.name)
		if err == nil {
			r.mu.Lock()
			r.base, r.head = last, last
			r.mu.Unlock()
			r.events.head = events
			close(r.ready)
			break
		}
		if h.ctx.Err() != nil || h.leaveIfIdle(r) {
			h.drop(r)
			return
		}
		log.Warn("cannot start tailing room; retrying", "err", err)
		if !backoff.wait(h.ctx) {
			h.drop(r)
			return
		}
	}
	backoff.reset()
	// One XREAD for both streams: the room's keys share a hash slot.
	args := &redis.XReadArgs{Count: int64(h.opt.ReadCount), Block: h.opt.Block}
	withEvents := true
	var batch []*Entry
	for {
		if h.leaveIfIdle(r) {
			return
		}
		r.mu.RLock()
		head := r.head.String()
		r.mu.RUnlock()
		if withEvents {
			args.Streams = append(args.Streams[:0], r.key, r.events.key, head, r.events.head.String())
		} else {
			args.Streams = append(args.Streams[:0], r.key, head)
		}
		res, err := h.blocking.XRead(h.ctx, args).Result()
		if err != nil {
			if h.ctx.Err() != nil {
				h.drop(r)
				return
			}
			if errors.Is(err, redis.Nil) {
				continue // the block timed out: nothing new
			}
			if withEvents && isWrongType(err) {
				// Someone made the events key something else than a stream
				// (redis-cli SET ...): messages must go on. Presence events
				// stop for this room until its tail starts again.
				withEvents = false
				log.Warn("a key of the room is not a stream; tailing its messages without presence events", "events_key", r.events.key, "err", err)
				continue
			}
			h.stats.TailErrors.Add(1)
			log.Warn("tail read failed; retrying", "err", err)
			if !backoff.wait(h.ctx) {
				h.drop(r)
				return
			}
			continue
		}
		backoff.reset()
		h.stats.TailReads.Add(1)
		read := time.Now()
		batch = batch[:0]
		events := h.takeEvents(r, res)
		for _, st := range res {
			if st.Stream != r.key {
				continue
			}
			for _, m := range st.Messages {
				e := toEntry(m)
				if !e.HasMessage {
					h.stats.Skipped.Add(1)
					log.Warn("skipping stream entry without a message field", "id", m.ID)
				}
				h.Encode(r.name, &e)
				batch = append(batch, &e)
			}
		}
		h.observeLag(read, batch)
		r.mu.Lock()
		r.push(batch)
		subs := r.subs
		r.mu.Unlock()
		if len(batch) == 0 && !events {
			continue
		}
		for _, s := range subs {
			s.notify()
		}
	}
}

// leaveIfIdle forgets the room when nobody is subscribed; a later
// Subscribe starts a fresh tail.
func (h *Hub) leaveIfIdle(r *tailedRoom) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	r.mu.RLock()
	idle := len(r.subs) == 0
	r.mu.RUnlock()
	if idle && h.rooms[r.name] == r {
		delete(h.rooms, r.name)
	}
	return idle
}

func (h *Hub) drop(r *tailedRoom) {
	h.mu.Lock()
	if h.rooms[r.name] == r {
		delete(h.rooms, r.name)
	}
	h.mu.Unlock()
}

// Rooms is how many rooms this process tails now.
func (h *Hub) Rooms() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.rooms)
}

type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 50 * time.Millisecond} }

func (b *backoff) reset() { b.d = 50 * time.Millisecond }

// wait sleeps for the current delay, doubling it up to maxBackoff; false if ctx ended.
func (b *backoff) wait(ctx context.Context) bool {
	t := time.NewTimer(b.d)
	defer t.Stop()
	b.d = min(2*b.d, maxBackoff)
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
