package hooks

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xroom/xroom/streams"
)

// WebhookOptions configure Webhooks; zero values take the defaults.
type WebhookOptions struct {
	URL    string // where batches are POSTed
	Secret string // HMAC key of X-Xroom-Signature
	// ClaimAfter: a batch another instance has not renewed for this long
	// is taken from it (the instance died).
	ClaimAfter time.Duration
	// Concurrency: rooms delivered at once.
	Concurrency int
	// MaxAttempts: tries of one batch before it goes to the dead letters.
	MaxAttempts int
	// Batch: the most messages of one request.
	Batch int
	// Timeout bounds one request.
	Timeout time.Duration
	// Backoff is the wait before the first retry; it doubles with each
	// retry up to maxBackoff, with jitter.
	Backoff time.Duration
	// From: where a room's group starts the first time (streams.HookStart).
	From streams.HookStart
	// Consumer names this instance in the groups; default host-pid-random.
	Consumer string
	Logger   *slog.Logger
	// Watch tunes how rooms are found without keyspace notifications.
	Watch streams.RoomWatchOptions
}

const (
	defaultClaimAfter  = 30 * time.Second
	defaultConcurrency = 16
	defaultMaxAttempts = 10
	defaultBatch       = 100
	defaultTimeout     = 10 * time.Second
	defaultBackoff     = time.Second
	// maxBackoff caps the wait between two tries of a batch.
	maxBackoff = time.Minute
	// redisRetry is how soon a room is looked at again after Redis failed.
	redisRetry = time.Second
	// holdsPerClaim: a held batch is renewed this many times per
	// ClaimAfter, so that one late renewal does not lose it.
	holdsPerClaim = 3
)

// Webhooks delivers every stored message to the webhook at least once, in
// order per room, surviving crashes of xroom and of the webhook: progress
// is the rooms' consumer groups in Redis (streams.HookGroup).
type Webhooks struct {
	hub    *streams.Hub
	group  *streams.HookGroup
	sender *Sender
	opt    WebhookOptions
	log    *slog.Logger
	stats  stats

	ctx    context.Context // ends when Close starts: no new batch is taken
	stop   context.CancelFunc
	sendCx context.Context // ends when Close gives up on batches in flight
	abort  context.CancelFunc
	ready  chan struct{} // closed once the group is prepared
	wg     sync.WaitGroup
	watch  atomic.Pointer[streams.RoomWatch]

	mu    sync.Mutex
	rooms map[string]*room
	queue []*room
	wake  chan struct{}

	lastErr atomic.Pointer[failure]
}

// failure is the last thing that went wrong, for the status.
type failure struct {
	Room   string    `json:"room"`
	Error  string    `json:"error"`
	Status int       `json:"status,omitempty"`
	At     time.Time `json:"at"`
}

// StartWebhooks starts delivering the hub's rooms to opt.URL. It does not
// wait for Redis: delivery starts once Redis answers.
func StartWebhooks(hub *streams.Hub, opt WebhookOptions) *Webhooks {
	orDefault(&opt.ClaimAfter, defaultClaimAfter)
	orDefault(&opt.Concurrency, defaultConcurrency)
	orDefault(&opt.MaxAttempts, defaultMaxAttempts)
	orDefault(&opt.Batch, defaultBatch)
	orDefault(&opt.Timeout, defaultTimeout)
	orDefault(&opt.Backoff, defaultBackoff)
	if opt.Consumer == "" {
		opt.Consumer = consumerName()
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	w := &Webhooks{hub: hub, opt: opt, log: opt.Logger.With("component", "webhooks"),
		sender: NewSender(opt.URL, opt.Secret, opt.Timeout, opt.Concurrency),
		group: hub.Store().HookGroup(streams.HookGroupOptions{Consumer: opt.Consumer, ClaimAfter: opt.ClaimAfter,
			Batch: opt.Batch, From: opt.From}),
		ready: make(chan struct{}), rooms: map[string]*room{}, wake: make(chan struct{}, 1)}
	w.ctx, w.stop = context.WithCancel(context.Background())
	w.sendCx, w.abort = context.WithCancel(context.Background())
	w.wg.Add(2 + opt.Concurrency)
	go w.prepare()
	go w.holdAll()
	for range opt.Concurrency {
		go w.worker()
	}
	return w
}

func orDefault[T int | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// consumerName is unique to this process: host, pid and a random part.
func consumerName() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "xroom"
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:])
}

// prepare finds where new groups start (retrying while Redis cannot be
// reached), then starts watching rooms.
func (w *Webhooks) prepare() {
	defer w.wg.Done()
	wait := 50 * time.Millisecond
	for {
		ctx, cancel := context.WithTimeout(w.ctx, 5*time.Second)
		err := w.group.Prepare(ctx)
		cancel()
		if err == nil {
			break
		}
		w.log.Warn("cannot prepare webhook delivery; retrying", "err", err)
		select {
		case <-time.After(wait):
			wait = min(2*wait, 2*time.Second)
		case <-w.ctx.Done():
			return
		}
	}
	close(w.ready)
	w.log.Info("webhooks on: every stored message goes to the webhook", "url", redactURL(w.opt.URL),
		"consumer", w.opt.Consumer, "group", streams.HookGroupName, "concurrency", w.opt.Concurrency)
	w.watch.Store(w.hub.WatchRooms(w.ring, w.opt.Watch))
	if w.ctx.Err() != nil { // Close ran meanwhile and found no watch to stop
		w.watch.Load().Close()
	}
}

// Close stops taking batches, gives the ones in flight until ctx ends to
// finish, and leaves the groups of the rooms where this instance holds
// nothing. What it still holds is claimed by another instance after
// ClaimAfter.
func (w *Webhooks) Close(ctx context.Context) error {
	w.stop()
	if wa := w.watch.Load(); wa != nil {
		wa.Close()
	}
	done := make(chan struct{})
	go func() { w.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		w.abort()
		<-done
		err = fmt.Errorf("webhook batches in flight: %w", ctx.Err())
	}
	w.abort()
	w.mu.Lock()
	rooms := make([]string, 0, len(w.rooms))
	for name := range w.rooms {
		rooms = append(rooms, name)
	}
	w.mu.Unlock()
	lctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if lerr := w.group.LeaveAll(lctx, rooms); lerr != nil {
		w.log.Warn("cannot leave the webhook groups", "err", lerr)
	}
	return err
}

// ring marks a room to be looked at: it may have new entries.
func (w *Webhooks) ring(name string) {
	w.mu.Lock()
	r := w.rooms[name]
	if r == nil {
		r = &room{name: name}
		w.rooms[name] = r
	}
	if r.phase == idle {
		w.enqueue(r)
	} else {
		r.again = true
	}
	w.mu.Unlock()
}

// enqueue queues r for a worker. w.mu must be held.
func (w *Webhooks) enqueue(r *room) {
	r.phase = queued
	w.queue = append(w.queue, r)
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// take waits for a room to work on; nil once Close has started.
func (w *Webhooks) take() *room {
	for {
		w.mu.Lock()
		if len(w.queue) > 0 && w.ctx.Err() == nil {
			r := w.queue[0]
			w.queue[0] = nil
			w.queue = w.queue[1:]
			r.phase = working // again stays: read clears it when it reads
			more := len(w.queue) > 0
			w.mu.Unlock()
			if more {
				select {
				case w.wake <- struct{}{}: // another worker takes the next
				default:
				}
			}
			return r
		}
		w.mu.Unlock()
		select {
		case <-w.wake:
		case <-w.ctx.Done():
			return nil
		}
	}
}

func (w *Webhooks) worker() {
	defer w.wg.Done()
	select {
	case <-w.ready:
	case <-w.ctx.Done():
		return
	}
	for r := w.take(); r != nil; r = w.take() {
		w.settle(r, w.step(r))
	}
}

// settle puts r where the step left it: idle, queued again at once, or
// queued again after a wait.
func (w *Webhooks) settle(r *room, o outcome) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case o.wait > 0:
		r.phase = waiting
		r.timer = time.AfterFunc(o.wait, func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			if r.phase == waiting {
				w.enqueue(r)
			}
		})
	case o.more || r.again:
		w.enqueue(r)
	default:
		r.phase = idle
	}
}

// holdAll renews every batch this instance holds, a few times per
// ClaimAfter, so that no other instance takes one while it is delivered or
// waits for a retry; a batch found taken is given up.
func (w *Webhooks) holdAll() {
	defer w.wg.Done()
	tick := time.NewTicker(w.opt.ClaimAfter / holdsPerClaim)
	defer tick.Stop()
	for {
		select {
		case <-w.ctx.Done(): // batches in flight end within Timeout
			return
		case <-tick.C:
		}
		for _, r := range w.held() {
			b := r.held()
			if b == nil {
				continue
			}
			ctx, cancel := context.WithTimeout(w.sendCx, w.opt.ClaimAfter/holdsPerClaim)
			ok, err := w.group.Hold(ctx, r.name, b.IDs())
			cancel()
			if err == nil && !ok && r.held() == b {
				b.lost.Store(true)
				w.log.Warn("another instance took a webhook batch this one held too long", "room", r.name, "first", b.Entries[0].ID.String())
			}
		}
	}
}

// held lists the rooms holding a batch.
func (w *Webhooks) held() []*room {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*room
	for _, r := range w.rooms {
		if r.held() != nil {
			out = append(out, r)
		}
	}
	return out
}

// noteFailure records what went wrong last, for the status.
func (w *Webhooks) noteFailure(room string, err error) {
	w.lastErr.Store(&failure{Room: room, Error: err.Error(), Status: errStatus(err), At: time.Now()})
}
