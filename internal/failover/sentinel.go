// Package failover follows a Redis primary managed by Sentinel for plain
// go-redis clients.
//
// go-redis v9.17.3's own failover client has two flaws xroom cannot live
// with. On a switch, its pool's Filter closes the connections to the old
// primary in place: an idle one stays in the idle list, in state CLOSED,
// never handed out and never removed, and still counted in the pool size,
// so with MaxActiveConns (xroom's hard cap) new connections are refused
// ("connection pool exhausted") until the process restarts. And it only
// learns of a switch from one Sentinel's +switch-master or from a new dial.
//
// Here the client is a plain go-redis client whose dialer asks Sentinel for
// the primary. Every connection it makes is tracked; when the primary
// changes (a +switch-master from any Sentinel, a poll, a READONLY reply) the
// tracked sockets to the old one are closed underneath the pool. The pool
// then sees ordinary broken connections: an idle one fails its health
// check and is removed, one in use fails its command and is removed, and
// nothing more is ever written to the demoted node.
package failover

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// pollEvery: a missed +switch-master (a Sentinel restarting, a lost
	// subscription) costs at most this long.
	pollEvery = time.Second
	// askTimeout bounds one question to one Sentinel.
	askTimeout = time.Second
	// dialTimeout is used when the options set none (go-redis's default).
	dialTimeout = 5 * time.Second
)

// addrPrefix starts the Addr of a client made by Client, so that code
// given only the client can tell that its primary may change.
const addrPrefix = "sentinel:"

// IsSentinelAddr reports whether a client's Addr is that of a Client.
func IsSentinelAddr(addr string) bool { return strings.HasPrefix(addr, addrPrefix) }

// ErrNoPrimary means no Sentinel named the primary.
var ErrNoPrimary = errors.New("no Sentinel named the primary")

// Sentinel follows one Sentinel master set. Make clients with Client; Close
// it after them.
type Sentinel struct {
	master    string
	sentinels []*redis.SentinelClient
	tls       *tls.Config
	dialWait  time.Duration
	log       *slog.Logger

	mu      sync.Mutex
	primary string
	conns   map[*conn]struct{}

	recheck chan struct{} // cap 1: ask the Sentinels now
	ctx     context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

// New follows opt.MasterName through the Sentinels in opt.Addrs, with
// opt's Sentinel credentials and TLS, until Close.
func New(opt *redis.UniversalOptions, log *slog.Logger) *Sentinel {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Sentinel{master: opt.MasterName, tls: opt.TLSConfig, dialWait: opt.DialTimeout, log: log,
		conns: map[*conn]struct{}{}, recheck: make(chan struct{}, 1)}
	if s.dialWait <= 0 {
		s.dialWait = dialTimeout
	}
	for _, a := range opt.Addrs {
		s.sentinels = append(s.sentinels, redis.NewSentinelClient(&redis.Options{
			Addr: a, Username: opt.SentinelUsername, Password: opt.SentinelPassword, TLSConfig: opt.TLSConfig,
			DialTimeout: opt.DialTimeout, PoolSize: 2, MaxRetries: -1, DisableIdentity: true, Protocol: 2,
		}))
	}
	s.ctx, s.stop = context.WithCancel(context.Background())
	s.wg.Add(1 + len(s.sentinels))
	go s.poll()
	for _, sc := range s.sentinels {
		go s.listen(sc)
	}
	return s
}

// Client returns a plain client for the primary with opt's settings (its
// Addrs, naming Sentinels, are not used). Close it before the Sentinel.
func (s *Sentinel) Client(opt *redis.UniversalOptions) *redis.Client {
	o := opt.Simple()
	o.Addr = addrPrefix + s.master // shown in errors; the dialer picks the real address
	o.Dialer = s.dial
	o.TLSConfig = nil // the dialer does TLS
	c := redis.NewClient(o)
	c.AddHook(readOnlyHook{s})
	return c
}

// Primary is the address of the primary as last named, or "".
func (s *Sentinel) Primary() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.primary
}

// Close stops following.
func (s *Sentinel) Close() error {
	s.stop()
	for _, sc := range s.sentinels {
		_ = sc.Close()
	}
	s.wg.Wait()
	return nil
}

// dial connects to the primary, asking the Sentinels first if it is not
// known (at start, or after a dial to it failed).
func (s *Sentinel) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	addr := s.Primary()
	if addr == "" {
		var err error
		if addr, err = s.ask(ctx); err != nil {
			return nil, err
		}
		s.switchTo(addr)
	}
	d := &net.Dialer{Timeout: s.dialWait, KeepAlive: 5 * time.Minute}
	var nc net.Conn
	var err error
	if s.tls != nil {
		cfg := s.tls.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		nc, err = (&tls.Dialer{NetDialer: d, Config: cfg}).DialContext(ctx, network, addr)
	} else {
		nc, err = d.DialContext(ctx, network, addr)
	}
	if err != nil {
		s.forget(addr)
		return nil, fmt.Errorf("dial the %s primary %s: %w", s.master, addr, err)
	}
	c := &conn{Conn: nc, addr: addr, s: s}
	s.mu.Lock()
	stale := s.primary != "" && s.primary != addr // switched while dialing
	if !stale {
		s.conns[c] = struct{}{}
	}
	s.mu.Unlock()
	if stale {
		_ = nc.Close()
		return nil, fmt.Errorf("dial the %s primary %s: the primary changed meanwhile", s.master, addr)
	}
	return c, nil
}

// forget drops addr as the primary after a failed dial, so that the next
// dial asks the Sentinels again.
func (s *Sentinel) forget(addr string) {
	s.mu.Lock()
	if s.primary == addr {
		s.primary = ""
	}
	s.mu.Unlock()
	s.askSoon()
}

// askSoon makes the poller ask the Sentinels now.
func (s *Sentinel) askSoon() {
	select {
	case s.recheck <- struct{}{}:
	default:
	}
}

// ask returns the primary the first answering Sentinel names.
func (s *Sentinel) ask(ctx context.Context) (string, error) {
	var errs []error
	for _, sc := range s.sentinels {
		actx, cancel := context.WithTimeout(ctx, askTimeout)
		a, err := sc.GetMasterAddrByName(actx, s.master).Result()
		cancel()
		if err == nil && len(a) == 2 {
			return net.JoinHostPort(a[0], a[1]), nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("%w %q: %w", ErrNoPrimary, s.master, errors.Join(errs...))
}

// switchTo makes addr the primary and closes every connection to another node.
func (s *Sentinel) switchTo(addr string) {
	s.mu.Lock()
	if s.primary == addr {
		s.mu.Unlock()
		return
	}
	old := s.primary
	s.primary = addr
	var stale []*conn
	for c := range s.conns {
		if c.addr != addr {
			stale = append(stale, c)
		}
	}
	s.mu.Unlock()
	if old != "" {
		s.log.Warn("the Redis primary changed; closing the connections to the old one", "master", s.master, "from", old, "to", addr, "connections", len(stale))
	}
	for _, c := range stale {
		_ = c.Close()
	}
}

// poll asks the Sentinels every pollEvery, and at once when asked to.
func (s *Sentinel) poll() {
	defer s.wg.Done()
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-s.recheck:
		}
		if addr, err := s.ask(s.ctx); err == nil {
			s.switchTo(addr)
		}
	}
}

// listen follows one Sentinel's +switch-master announcements.
func (s *Sentinel) listen(sc *redis.SentinelClient) {
	defer s.wg.Done()
	for s.ctx.Err() == nil {
		ps := sc.Subscribe(s.ctx, "+switch-master")
		for s.ctx.Err() == nil {
			msg, err := ps.ReceiveMessage(s.ctx)
			if err != nil {
				break
			}
			// "<master> <old ip> <old port> <new ip> <new port>"
			f := strings.Fields(msg.Payload)
			if len(f) == 5 && f[0] == s.master {
				s.switchTo(net.JoinHostPort(f[3], f[4]))
			}
		}
		_ = ps.Close()
		select { // this Sentinel is down: try again later; the others and the poll cover meanwhile
		case <-s.ctx.Done():
		case <-time.After(pollEvery):
		}
	}
}

// conn is a connection to what was the primary when it was made.
type conn struct {
	net.Conn
	addr   string
	s      *Sentinel
	once   sync.Once
	closed atomic.Bool
}

// SyscallConn exposes the socket, so that go-redis's health check of an
// idle connection (a non-blocking peek) sees one closed by switchTo and
// drops it instead of writing a command to it. A TLS connection is not
// peeked (as go-redis does not), only checked for having been closed.
func (c *conn) SyscallConn() (syscall.RawConn, error) {
	if c.closed.Load() {
		return nil, net.ErrClosed
	}
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return noPeek{}, nil
}

// noPeek is a RawConn that checks nothing.
type noPeek struct{}

func (noPeek) Control(func(fd uintptr)) error           { return nil }
func (noPeek) Read(func(fd uintptr) (done bool)) error  { return nil }
func (noPeek) Write(func(fd uintptr) (done bool)) error { return nil }

func (c *conn) Close() error {
	var err error
	c.once.Do(func() {
		c.closed.Store(true)
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
		err = c.Conn.Close()
	})
	return err
}

// readOnlyHook asks the Sentinels at once when the node answers READONLY:
// it is no longer the primary.
type readOnlyHook struct{ s *Sentinel }

func (h readOnlyHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h readOnlyHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if redis.HasErrorPrefix(err, "READONLY") {
			h.s.askSoon()
		}
		return err
	}
}

func (h readOnlyHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, c := range cmds {
			if redis.HasErrorPrefix(c.Err(), "READONLY") {
				h.s.askSoon()
				break
			}
		}
		return err
	}
}
