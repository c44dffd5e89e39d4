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

// TailMode is how the hub learns that a tailed room has new entries. Every
// mode reads the entries themselves from the room's stream.
type TailMode int32

const (
	// ModeAuto picks ModeNotify when Redis lets xroom turn keyspace
	// notifications on, else a fallback: ModeBlocking on one Redis node,
	// ModePoll on a Cluster.
	ModeAuto TailMode = iota
	// ModeNotify: Redis rings a doorbell (a keyspace notification) for
	// every XADD to a tailed room, on one subscriber connection per primary;
	// rooms that rang are read in batches over the command pool.
	ModeNotify
	// ModeBlocking: a fixed number of connections each block on one XREAD
	// over a group of rooms (no notifications needed; one node only).
	ModeBlocking
	// ModePoll: every tailed room is read every PollEvery, in batches
	// (a Cluster that refuses CONFIG: multi-key XREAD cannot cross slots).
	ModePoll
)

// TailPoolSize caps the connections of the hub's own client, the one
// NewHub takes beside the store's (a notification subscriber, or the
// fallback's blocking reads: see TailMode); they do not grow with rooms.
// Size that client's pool with it.
const TailPoolSize = 4

func (m TailMode) String() string {
	switch m {
	case ModeNotify:
		return "notify"
	case ModeBlocking:
		return "blocking"
	case ModePoll:
		return "poll"
	}
	return "auto"
}

// ParseTailMode reads a TailMode by its name.
func ParseTailMode(s string) (TailMode, error) {
	for _, m := range []TailMode{ModeAuto, ModeNotify, ModeBlocking, ModePoll} {
		if s == m.String() {
			return m, nil
		}
	}
	return ModeAuto, errors.New("want auto, notify, blocking or poll")
}

// HubOptions configure a Hub.
type HubOptions struct {
	Encode Encoder
	// EncodeEvent encodes presence events (see events.go); nil leaves them without a Frame.
	EncodeEvent EventEncoder
	// Buffer is how many recent entries each tailed room keeps in memory.
	// A connection further behind than that catches up from Redis instead,
	// so a slow client costs Redis reads, never unbounded memory.
	Buffer int
	// ReadCount is the most entries one tail read asks for, per stream.
	ReadCount int
	// Mode forces a tail mode; ModeAuto (the default) chooses.
	Mode TailMode
	// NoReadBack turns off reading back this instance's appends in their
	// own pipeline (readback.go; TAIL_READ_BACK=false): every append is
	// then read by the tail, on its keyspace notification.
	NoReadBack bool
	// Block is how long one blocking XREAD over a group of rooms waits
	// before it is issued again (ModeBlocking).
	Block time.Duration
	// CatchUpTimeout bounds one Redis read, by the tail or by a subscriber
	// behind the buffer, so a stalled Redis delays it, never hangs it.
	CatchUpTimeout time.Duration
	// Linger is how long a room nobody is subscribed to stays tailed, so a
	// client that reconnects finds its room warm.
	Linger time.Duration
	// SweepEvery is how often each tailed room is read whether it rang or
	// not (ModeNotify): a lost notification costs at most this much latency.
	SweepEvery time.Duration
	// PollEvery is how often ModePoll reads every tailed room.
	PollEvery time.Duration
	// StallAfter is how long a room may go untailed (Redis refuses the
	// subscriber connection, reads keep failing) before its subscribers are
	// told it is unavailable and Health reports it.
	StallAfter time.Duration
	Logger     *slog.Logger
}

const (
	defaultBuffer     = 1024
	defaultReadCount  = 1000
	defaultBlock      = time.Second
	defaultCatchUp    = 5 * time.Second
	defaultLinger     = 2 * time.Second
	defaultSweepEvery = 30 * time.Second
	defaultPollEvery  = 250 * time.Millisecond
	defaultStallAfter = 3 * time.Second
	// maxBackoff bounds the wait between retries while Redis is unreachable.
	maxBackoff = 2 * time.Second
)

// ErrHubClosed is returned by Subscribe once the hub is closed.
var ErrHubClosed = errors.New("hub closed")

// Hub tails rooms and fans their entries out to subscribers. However many
// rooms and subscribers a process has, its Redis connections stay a small
// constant beyond the command pool (see TailMode): each room's entries are
// read from its stream by batched XREADs, one read of a room at a time,
// into a ring every subscriber reads from by its own cursor.
type Hub struct {
	store    *Store
	blocking redis.UniversalClient
	opt      HubOptions
	log      *slog.Logger
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu    sync.RWMutex
	rooms map[string]*tailedRoom

	mode    atomic.Int32  // the TailMode in force, once chosen
	modeSet chan struct{} // closed when it is chosen
	tail    *tailer       // tail.go
	bells   *bells        // doorbell.go (ModeNotify)
	groups  *groups       // blocking.go (ModeBlocking)
	reaper  reaper
	health  health                // health.go
	stall   atomic.Pointer[error] // why rooms cannot be tailed now, or nil

	stats    HubStats
	bellGens atomic.Int64         // doorbell generations handed out (readback.go)
	lag      prometheus.Histogram // tail read lag, see metrics.go
}

// HubStats counts what the hub did, for metrics and tests.
type HubStats struct {
	TailReads  atomic.Int64 // XREAD calls made by the tail
	TailErrors atomic.Int64 // failed tail reads
	Rings      atomic.Int64 // keyspace notifications heard (ModeNotify)
	// ReadBacks are XREADs in append pipelines (readback.go), RingsSkipped
	// the notifications of appends they had covered.
	ReadBacks    atomic.Int64
	RingsSkipped atomic.Int64
	Reconnects   atomic.Int64 // subscriber connections lost and made again
	Stalls       atomic.Int64 // times rooms became unavailable (health.go)
	CatchUps     atomic.Int64 // reads from Redis by a subscriber behind the buffer
	Skipped      atomic.Int64 // entries without a message field
	Gaps         atomic.Int64 // catch-up reads that found entries lost to trimming (livegap.go)
	RollBacks    atomic.Int64 // rooms found rolled back by a failover (rollback.go)
	LostAcked    atomic.Int64 // acknowledged entries found gone before the tail read them (owed.go)
}

// NewHub returns a hub reading rooms through store. The blocking client
// holds the tail's own few connections (the notification subscriber, or
// the blocking reads of the fallback); the hub closes it when it is closed.
// NewHub does not wait for Redis: the tail mode is chosen in the background.
func NewHub(store *Store, blocking redis.UniversalClient, opt HubOptions) *Hub {
	orDefault(&opt.Buffer, defaultBuffer)
	orDefault(&opt.ReadCount, defaultReadCount)
	orDefault(&opt.Block, defaultBlock)
	orDefault(&opt.CatchUpTimeout, defaultCatchUp)
	orDefault(&opt.Linger, defaultLinger)
	orDefault(&opt.SweepEvery, defaultSweepEvery)
	orDefault(&opt.PollEvery, defaultPollEvery)
	orDefault(&opt.StallAfter, defaultStallAfter)
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Encode == nil {
		opt.Encode = func(string, *Entry) []byte { return nil }
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{store: store, blocking: blocking, opt: opt, log: opt.Logger, ctx: ctx, cancel: cancel,
		rooms: map[string]*tailedRoom{}, modeSet: make(chan struct{}), lag: newLagHistogram()}
	h.tail = newTailer(h)
	h.bells = newBells(h)
	if sentinel(store.rdb) {
		// Where each client's newest connection went: after a failover the
		// command pool moves to the new primary at once, and the doorbell
		// follows it (bells.followPrimary).
		h.bells.poolAddr.onChange = h.suspectAll // a new primary may lack what was read
		store.rdb.AddHook(&h.bells.poolAddr)
		blocking.AddHook(&h.bells.bellAddr)
	}
	h.groups = newGroups(h)
	h.reaper.wake = make(chan struct{}, 1)
	h.wg.Add(4)
	go h.setup()
	go h.tail.run()
	go h.reap()
	go h.watch()
	return h
}

// orDefault sets an option left at zero (or below) to its default.
func orDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// Stats returns the hub's counters.
func (h *Hub) Stats() *HubStats { return &h.stats }

// Store returns the store the hub reads.
func (h *Hub) Store() *Store { return h.store }

// Mode is the tail mode in force; ModeAuto until it is chosen.
func (h *Hub) Mode() TailMode { return TailMode(h.mode.Load()) }

// Encode encodes e as the hub does for live entries.
func (h *Hub) Encode(room string, e *Entry) {
	if e.HasMessage {
		e.Frame = h.opt.Encode(room, e)
	}
}

// Close stops every tail and closes the blocking client.
func (h *Hub) Close() error {
	h.store.tail.CompareAndSwap(h, nil)
	h.mu.Lock() // Subscribe starts rooms under mu: none starts after this
	h.cancel()
	h.mu.Unlock()
	h.bells.closeAll()
	err := h.blocking.Close() // unblocks reads in flight
	h.wg.Wait()
	h.mu.Lock()
	clear(h.rooms)
	h.mu.Unlock()
	return err
}

// Subscribe starts delivering notifications for room: notify is called,
// from the tail, whenever new entries may be available; it must not block.
// It waits until the room's tail knows its starting position. It fails
// with an error wrapping ErrUnavailable when the room cannot be tailed now.
func (h *Hub) Subscribe(ctx context.Context, room string, notify func()) (*Subscription, error) {
	h.mu.Lock()
	if h.ctx.Err() != nil {
		h.mu.Unlock()
		return nil, ErrHubClosed
	}
	r := h.rooms[room]
	if r == nil {
		r = &tailedRoom{name: room, key: h.store.keys.Messages(room), ready: make(chan struct{}), ring: make([]*Entry, min(ringStart, h.opt.Buffer)), ringMax: h.opt.Buffer}
		r.events.key = h.store.keys.Events(room)
		r.withEvents.Store(true)
		h.rooms[room] = r
		h.wg.Add(1)
		go h.start(r)
	}
	sub := &Subscription{hub: h, room: r, notify: notify}
	r.mu.Lock()
	r.subs = append(r.subs[:len(r.subs):len(r.subs)], sub)
	r.emptySince = time.Time{}
	r.mu.Unlock()
	h.mu.Unlock()

	select {
	case <-r.ready:
		if err := r.stalled.Load(); err != nil {
			sub.Close()
			return nil, *err
		}
		return sub, nil
	case <-ctx.Done():
		sub.Close()
		return nil, ctx.Err()
	case <-h.ctx.Done():
		sub.Close()
		return nil, ErrHubClosed
	}
}

// start finds where a new room's tail begins (its streams' newest IDs),
// waits for the tail mode to be chosen, and hands the room to it.
func (h *Hub) start(r *tailedRoom) {
	defer h.wg.Done()
	backoff := newBackoff()
	for {
		last, events, err := h.store.heads(h.ctx, r.name)
		if err == nil {
			r.mu.Lock()
			r.base, r.head = last, last
			r.mu.Unlock()
			r.events.head = events
			break
		}
		if h.ctx.Err() != nil || !h.tailing(r) {
			return
		}
		h.log.Warn("cannot start tailing room; retrying", "room", r.name, "err", err)
		if !backoff.wait(h.ctx) {
			return
		}
	}
	select {
	case <-h.modeSet:
	case <-h.ctx.Done():
		return
	}
	close(r.ready) // the room is tailed from here on, by the mode in force
	if !h.tailing(r) {
		return
	}
	switch h.Mode() {
	case ModeNotify:
		h.bells.add(r) // its subscription's confirmation rings it once
	case ModeBlocking:
		h.groups.add(r)
	case ModePoll:
		h.tail.ring(r)
	}
}

// tailing reports whether r is still the room the hub tails under its name.
func (h *Hub) tailing(r *tailedRoom) bool {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.rooms[r.name] == r
}

// roomsNow returns the rooms tailed now.
func (h *Hub) roomsNow() []*tailedRoom {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]*tailedRoom, 0, len(h.rooms))
	for _, r := range h.rooms {
		out = append(out, r)
	}
	return out
}

// Rooms is how many rooms this process tails now.
func (h *Hub) Rooms() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.rooms)
}

// every runs f every d until the hub closes, and marks the caller's
// goroutine done then (it must have been added to h.wg).
func (h *Hub) every(d time.Duration, f func()) {
	defer h.wg.Done()
	tick := time.NewTicker(d)
	defer tick.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case <-tick.C:
			f()
		}
	}
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
