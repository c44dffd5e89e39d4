package streams_test

import (
	"context"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/xroom/xroom/internal/redistest"
	"github.com/xroom/xroom/internal/testkit"
	"github.com/xroom/xroom/streams"
)

// BenchmarkTail is the tail without sockets (issue 14: "beyond what sockets
// allow here"): one hub tails N rooms, each with one subscription in
// process; messages are appended round robin over `active` of them (the
// first ones) by a client of the benchmark's own, and an op is one message
// read by the tail and delivered to its room's subscriber. flood appends
// as fast as pipelines of XADDs go (the tail reads many entries per room
// and per XREAD: ns/msg is the throughput); paced appends one XADD every
// 1/pacedRate s, so nearly every message is a ring and a read of its own,
// as in the bench's rooms runs (ns/msg is the pace: read the CPU figures).
// The tail reads only rooms that rang, so the cost per message should not
// depend on how many idle rooms are tailed (compare rooms=100, 10000 and
// 50000 at active=100), and the hub's Redis connections stay the command
// pool plus the subscriber however many rooms it tails.
//
//	go test -run '^$' -bench Tail -benchtime 3s ./streams
//
// Custom metrics: ns/msg (wall time per delivered message), redis-conns
// (the hub's connections in CLIENT LIST by client name, the most seen
// during the run), xread/msg and redis-cmds/msg (INFO commandstats; the
// benchmark's own XADD counts, one per message), redis-us/msg (Redis CPU,
// INFO cpu) and proc-us/msg (this process's CPU: the hub, the subscribers
// and the appending client). Timings are for comparison on one machine,
// never targets.
func BenchmarkTail(b *testing.B) {
	srv := redistest.Shared(b)
	redistest.RequireReal(b, srv) // keyspace notifications, CLIENT LIST, INFO
	for _, rooms := range []int{100, 10000, 50000} {
		b.Run("rooms="+strconv.Itoa(rooms), func(b *testing.B) {
			t := newTailBench(b, srv, rooms)
			actives := []int{100, rooms}
			if rooms <= 100 {
				actives = []int{rooms}
			}
			for _, active := range actives {
				name := "active=" + strconv.Itoa(active)
				if active == rooms {
					name = "active=all"
				}
				b.Run(name+"/flood", func(b *testing.B) { t.run(b, active, 0) })
				b.Run(name+"/paced", func(b *testing.B) { t.run(b, active, pacedRate) })
			}
		})
	}
}

// tailBench is a hub tailing its rooms, each with one subscriber that
// reads whatever the tail notifies it of.
type tailBench struct {
	srv       *redistest.Server
	check     *redis.Client // the benchmark's own: INFO, CLIENT LIST, XADD
	store     *streams.Store
	hub       *streams.Hub
	names     []string // the hub's client names
	rooms     []*benchRoom
	pending   chan *benchRoom
	delivered atomic.Int64
}

// benchRoom is one room's subscriber.
type benchRoom struct {
	name    string
	key     string
	sub     *streams.Subscription
	queued  atomic.Bool // waiting in pending
	mu      sync.Mutex  // held while reading
	cursor  streams.ID
	scratch []*streams.Entry
}

func newTailBench(b *testing.B, srv *redistest.Server, n int) *tailBench {
	prefix := redistest.Prefix(b)
	pool := 10 * runtime.GOMAXPROCS(0) // the server's REDIS_POOL_SIZE default
	cmdName, tailName := "bench-cmd-"+prefix, "bench-tail-"+prefix
	// Sized as app/main.go sizes the server's two clients.
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, ClientName: cmdName, PoolSize: pool, MaxActiveConns: pool, ContextTimeoutEnabled: true})
	tail := redis.NewClient(&redis.Options{Addr: srv.Addr, ClientName: tailName, PoolSize: 4, MaxActiveConns: 4, MaxIdleConns: 4})
	t := &tailBench{srv: srv, check: srv.Client(b), names: []string{cmdName, tailName}, pending: make(chan *benchRoom, n)}
	t.store = streams.NewStore(rdb, streams.Options{Prefix: prefix})
	t.hub = streams.NewHub(t.store, tail, streams.HubOptions{Encode: testFrame, Logger: testkit.Quiet()})
	b.Cleanup(func() {
		_ = t.hub.Close() // closes tail
		_ = rdb.Close()
		var keys []string
		for _, r := range t.rooms {
			keys = append(keys, r.key)
			if len(keys) == 1000 {
				t.check.Unlink(context.Background(), keys...)
				keys = keys[:0]
			}
		}
		if len(keys) > 0 {
			t.check.Unlink(context.Background(), keys...)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	for range 8 {
		go t.deliver(ctx)
	}

	start := time.Now()
	t.rooms = make([]*benchRoom, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var failed atomic.Pointer[error]
	for i := range n {
		r := &benchRoom{name: "room" + strconv.Itoa(i), scratch: make([]*streams.Entry, 0, 256)}
		r.key = t.store.Keys().Messages(r.name)
		t.rooms[i] = r
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			sctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			sub, err := t.hub.Subscribe(sctx, r.name, func() { t.ring(r) })
			if err != nil {
				failed.Store(&err)
				return
			}
			r.sub = sub
		}()
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatalf("subscribing %d rooms: %v", n, *err)
	}
	if m := t.hub.Mode(); m != streams.ModeNotify {
		b.Fatalf("tail mode %v, want notify", m)
	}
	b.Logf("%d rooms subscribed in %v; %d Redis connections", n, time.Since(start).Round(time.Millisecond), t.conns(b))
	return t
}

// ring queues r for a read (the hub's notify callback: must not block;
// pending holds every room at most once).
func (t *tailBench) ring(r *benchRoom) {
	if r.queued.CompareAndSwap(false, true) {
		t.pending <- r
	}
}

// deliver reads the rooms that were notified until they have nothing new.
func (t *tailBench) deliver(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-t.pending:
			r.queued.Store(false) // a ring from now on reads again
			r.mu.Lock()
			for {
				es, next, err := r.sub.Next(ctx, r.cursor, r.scratch)
				if err != nil || len(es) == 0 {
					break
				}
				r.cursor = next
				t.delivered.Add(int64(len(es)))
			}
			r.mu.Unlock()
		}
	}
}

// conns is how many connections the hub holds, by CLIENT LIST.
func (t *tailBench) conns(b *testing.B) int {
	list, err := t.check.ClientList(context.Background()).Result()
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, name := range t.names {
		n += strings.Count(list, " name="+name+" ")
	}
	return n
}

// redisWork is INFO's view of Redis's work so far.
type redisWork struct {
	xread, total int64
	cpu          float64 // s
}

func (t *tailBench) redisWork(b *testing.B) redisWork {
	info, err := t.check.Info(context.Background(), "commandstats", "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var w redisWork
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		if k == "used_cpu_user" || k == "used_cpu_sys" {
			f, _ := strconv.ParseFloat(v, 64)
			w.cpu += f
			continue
		}
		cmd, isCmd := strings.CutPrefix(k, "cmdstat_")
		if !isCmd || cmd == "info" || cmd == "client|list" {
			continue
		}
		calls, _, _ := strings.Cut(strings.TrimPrefix(v, "calls="), ",")
		n, _ := strconv.ParseInt(calls, 10, 64)
		w.total += n
		if cmd == "xread" {
			w.xread += n
		}
	}
	return w
}

// cpuSelf is this process's CPU time so far.
func cpuSelf() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

const (
	// appendBatch is how many XADDs one pipeline of a flood holds.
	appendBatch = 100
	// pacedRate is the messages per second of a paced run.
	pacedRate = 2000
)

// run appends b.N messages round robin over the first active rooms, as
// fast as it can (rate 0) or at rate messages/s, and waits until their
// subscribers have read every one.
func (t *tailBench) run(b *testing.B, active int, rate float64) {
	ctx := context.Background()
	want := t.delivered.Load() + int64(b.N)
	maxConns := t.conns(b)
	before, cpuBefore := t.redisWork(b), cpuSelf()
	batch := appendBatch
	if rate > 0 {
		batch = 1
	}
	b.ResetTimer()
	start := time.Now()
	for sent := 0; sent < b.N; {
		if rate > 0 {
			time.Sleep(time.Until(start.Add(time.Duration(float64(sent) / rate * float64(time.Second)))))
		}
		pipe := t.check.Pipeline()
		for range min(batch, b.N-sent) {
			r := t.rooms[sent%active]
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: r.key, Values: []string{"user", "u", "message", "m" + strconv.Itoa(sent)}})
			sent++
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	nextCount := time.Now()
	for t.delivered.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d messages delivered after a minute", t.delivered.Load()-want+int64(b.N), b.N)
		}
		if time.Now().After(nextCount) { // connections while the tail works, too
			maxConns = max(maxConns, t.conns(b))
			nextCount = time.Now().Add(100 * time.Millisecond)
		}
		time.Sleep(50 * time.Microsecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cpu := cpuSelf() - cpuBefore
	after := t.redisWork(b)
	maxConns = max(maxConns, t.conns(b))
	n := float64(b.N)
	b.ReportMetric(float64(elapsed.Nanoseconds())/n, "ns/msg")
	b.ReportMetric(float64(maxConns), "redis-conns")
	b.ReportMetric(float64(after.xread-before.xread)/n, "xread/msg")
	b.ReportMetric(float64(after.total-before.total)/n, "redis-cmds/msg")
	b.ReportMetric((after.cpu-before.cpu)*1e6/n, "redis-us/msg")
	b.ReportMetric(float64(cpu.Microseconds())/n, "proc-us/msg")
	if pool := 10 * runtime.GOMAXPROCS(0); maxConns > pool+4 {
		b.Errorf("%d Redis connections for %d rooms: more than the pool (%d) + 4", maxConns, len(t.rooms), pool)
	}
}
