package streams

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// bells are the doorbells of a hub, one per Redis primary that owns a
// tailed room (a single one unless on a Cluster).
type bells struct {
	h      *Hub
	mu     sync.Mutex
	byAddr map[string]*bell
	of     map[*tailedRoom]*bell
	// poolAddr and bellAddr are where the command pool's and the tail's
	// newest connections went (one Redis node or Sentinel only).
	poolAddr, bellAddr dialedAddr
	// watcher listens to every room on every primary (roomwatch.go).
	watcher *RoomWatch
}

func newBells(h *Hub) *bells {
	return &bells{h: h, byAddr: map[string]*bell{}, of: map[*tailedRoom]*bell{}}
}

// nodeOf is the client of the node whose doorbell rings for r: the hub's
// blocking client itself, or on a Cluster the node that owns r's slot now,
// as the command client knows it (its appends and reads meet MOVED first).
func (b *bells) nodeOf(ctx context.Context, r *tailedRoom) (addr string, c redis.UniversalClient, err error) {
	cc, ok := b.h.store.rdb.(*redis.ClusterClient)
	if !ok {
		return "", b.h.blocking, nil
	}
	node, err := cc.MasterForKey(ctx, r.key)
	if err != nil {
		return "", nil, err
	}
	return node.Options().Addr, node, nil
}

// add starts ringing for r.
func (b *bells) add(r *tailedRoom) {
	addr, c, err := b.nodeOf(b.h.ctx, r)
	if err != nil {
		// The slot map is not known yet: the next remap places the room,
		// and until then the sweep reads it.
		b.h.log.Warn("cannot find the room's Redis node; retrying", "room", r.name, "err", err)
		addr, c = "", nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.place(r, addr, c)
}

// place puts r on the doorbell of addr (nil c: on none for now). b.mu must be held.
func (b *bells) place(r *tailedRoom, addr string, c redis.UniversalClient) {
	if old := b.of[r]; old != nil {
		if old.addr == addr {
			return
		}
		if old.addr != "" && c != nil {
			r.suspect.Store(true) // a promoted replica may lack what was read (rollback.go)
		}
		old.forget(r)
		if old.empty() && old.addr != "" && !old.watching() {
			old.stop()
			delete(b.byAddr, old.addr)
		}
	}
	delete(b.of, r)
	if c == nil {
		b.of[r] = nil
		return
	}
	bl := b.byAddr[addr]
	if bl == nil {
		bl = newBell(b.h, addr, c)
		b.byAddr[addr] = bl
	}
	b.of[r] = bl
	bl.want(r)
}

// remove stops ringing for r.
func (b *bells) remove(r *tailedRoom) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if bl := b.of[r]; bl != nil {
		bl.forget(r)
	}
	delete(b.of, r)
}

// follow keeps each room's doorbell on the node that owns its slot: after
// a migration or a failover, the room's channels move to the new owner,
// which rings the room once when it confirms them.
func (b *bells) follow() {
	h := b.h
	cc := h.store.rdb.(*redis.ClusterClient)
	h.every(remapEvery, func() {
		if b.anyDown() {
			cc.ReloadState(h.ctx) // a dead node: learn who owns its slots now
		}
		b.mu.Lock()
		rooms := make([]*tailedRoom, 0, len(b.of))
		for r := range b.of {
			rooms = append(rooms, r)
		}
		b.mu.Unlock()
		for _, r := range rooms {
			addr, c, err := b.nodeOf(h.ctx, r)
			if err != nil {
				continue
			}
			b.mu.Lock()
			if _, still := b.of[r]; still {
				b.place(r, addr, c)
			}
			b.mu.Unlock()
		}
		b.watchPrimaries()
	})
}

// watch puts w's pattern on a doorbell of every primary: the one doorbell
// of a single node, or on a Cluster one per primary (kept up to date by
// follow).
func (b *bells) watch(w *RoomWatch) {
	b.mu.Lock()
	if b.h.ctx.Err() != nil { // the hub is closing: closeAll, under b.mu, stops no bell made after it
		b.mu.Unlock()
		return
	}
	b.watcher = w
	if _, cluster := b.h.store.rdb.(*redis.ClusterClient); !cluster {
		bl := b.byAddr[""]
		if bl == nil {
			bl = newBell(b.h, "", b.h.blocking)
			b.byAddr[""] = bl
		}
		bl.setWatch(w)
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	b.watchPrimaries()
}

// watchPrimaries gives every Cluster primary a doorbell with the watch's
// pattern, and takes it off nodes that are no longer primaries.
func (b *bells) watchPrimaries() {
	h := b.h
	cc := h.store.rdb.(*redis.ClusterClient)
	b.mu.Lock()
	w := b.watcher
	b.mu.Unlock()
	if w == nil {
		return
	}
	var mu sync.Mutex
	primaries := map[string]*redis.Client{}
	err := cc.ForEachMaster(h.ctx, func(_ context.Context, c *redis.Client) error {
		mu.Lock()
		primaries[c.Options().Addr] = c
		mu.Unlock()
		return nil
	})
	if err != nil {
		return // the next remap tries again
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.watcher != w || h.ctx.Err() != nil {
		return
	}
	for addr, c := range primaries {
		bl := b.byAddr[addr]
		if bl == nil {
			bl = newBell(h, addr, c)
			b.byAddr[addr] = bl
		}
		if !bl.watching() {
			bl.setWatch(w)
		}
	}
	for addr, bl := range b.byAddr {
		if primaries[addr] == nil && bl.watching() {
			bl.setWatch(nil)
			if bl.empty() {
				bl.stop()
				delete(b.byAddr, addr)
			}
		}
	}
}

// unwatch takes w's pattern off every doorbell.
func (b *bells) unwatch(w *RoomWatch) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.watcher != w {
		return
	}
	b.watcher = nil
	for addr, bl := range b.byAddr {
		bl.setWatch(nil)
		if addr != "" && bl.empty() {
			bl.stop()
			delete(b.byAddr, addr)
		}
	}
}

func (b *bells) anyDown() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, bl := range b.byAddr {
		if bl.downSince.Load() != 0 {
			return true
		}
	}
	return false
}

// downOf reports, for each doorbell that has been unable to ring since
// before cutoff, why.
func (b *bells) downOf(cutoff time.Time) map[*bell]error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out map[*bell]error
	for _, bl := range b.byAddr {
		since := bl.downSince.Load()
		if since == 0 || time.Unix(0, since).After(cutoff) || bl.empty() {
			continue // a doorbell of the room watch alone stalls no room
		}
		if out == nil {
			out = map[*bell]error{}
		}
		err := bl.lastErr.Load()
		reason := "lost"
		if err != nil {
			reason = (*err).Error()
		}
		out[bl] = fmt.Errorf("%w: the Redis notification connection%s is down since %s: %s", ErrUnavailable, bl.where(), time.Unix(0, since).UTC().Format(time.RFC3339), reason)
	}
	return out
}

// bellOf is the doorbell r is on, or nil.
func (b *bells) bellOf(r *tailedRoom) *bell {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.of[r]
}

func (b *bells) closeAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, bl := range b.byAddr {
		bl.stop()
	}
}

// followPrimary keeps the doorbell on the node the command pool talks to.
// After a Sentinel failover go-redis moves the command pool to the new
// primary, but leaves a subscriber connection where it was: on the demoted
// node, which no longer sees the room's writes. When the two differ, the
// subscriber connection is made again (to the primary), and its
// subscriptions ring every room once.
func (b *bells) followPrimary() {
	h := b.h
	h.every(remapEvery, func() {
		pool, bell := b.poolAddr.get(), b.bellAddr.get()
		if pool == "" || bell == "" || pool == bell {
			return
		}
		b.mu.Lock()
		bl := b.byAddr[""]
		b.mu.Unlock()
		if bl == nil {
			return
		}
		h.log.Warn("the Redis primary changed; moving the notification connection to it", "from", bell, "to", pool)
		b.bellAddr.set(pool) // until the new connection says where it went
		bl.renew()
	})
}

// dialedAddr is a go-redis hook that remembers the remote address of the
// newest connection its client made.
type dialedAddr struct {
	addr atomic.Pointer[string]
	// onChange, if set, is called when a connection goes to another
	// address than the one before.
	onChange func()
}

func (d *dialedAddr) get() string {
	if p := d.addr.Load(); p != nil {
		return *p
	}
	return ""
}

func (d *dialedAddr) set(a string) {
	if old := d.addr.Swap(&a); old != nil && *old != a && d.onChange != nil {
		d.onChange()
	}
}

func (d *dialedAddr) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err == nil {
			d.set(c.RemoteAddr().String())
		}
		return c, err
	}
}

func (d *dialedAddr) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (d *dialedAddr) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
