package handlers

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2"
)

// Limits bound what one client may cost. Zero values turn a limit off.
// All of them are per server instance: each instance counts on its own.
type Limits struct {
	// Rate and Burst: messages per second one connection may send, and how
	// many it may send at once after a pause (token bucket).
	Rate  float64
	Burst int
	// UserRate and UserBurst: the same for all of one user's connections
	// on this instance together.
	UserRate  float64
	UserBurst int
	// MaxConnsPerIP caps open WebSocket connections from one client address.
	MaxConnsPerIP int
	// MaxConns caps open WebSocket connections on the instance (MAX_CONNS):
	// beyond it, handshakes get 503 server_full (upgrade.go).
	MaxConns int
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names the
	// client address; any other peer is the client itself.
	TrustedProxies []netip.Prefix
	// MaxReplay caps the entries one connection is replayed on join
	// (since=, or after a reset); beyond it, only the newest are sent.
	MaxReplay int
}

// clock is a monotonic time in nanoseconds since the process started:
// buckets store an int64 instead of a time.Time (24 bytes).
var clockStart = time.Now()

func clock() int64 { return int64(time.Since(clockStart)) }

// bucket is a token bucket refilled lazily from the time of its last use:
// no timer or goroutine per connection, 16 bytes each.
type bucket struct {
	tokens float64
	last   int64 // clock() when tokens was computed; 0: never used (full)
}

// level is how many tokens the bucket holds at now.
func (b *bucket) level(now int64, rate float64, burst int) float64 {
	if b.last == 0 {
		return float64(burst)
	}
	return math.Min(float64(burst), b.tokens+float64(now-b.last)/1e9*rate)
}

// take removes one token the caller found with level.
func (b *bucket) take(now int64, level float64) {
	b.tokens, b.last = level-1, now
}

// wait is how long until one token is there again.
func wait(level, rate float64) time.Duration {
	return time.Duration(math.Ceil((1 - level) / rate * 1e9))
}

// guard holds the per-instance state of the limits that span connections.
type guard struct {
	mu     sync.Mutex
	users  map[string]*bucket
	swept  int // size of users after the last sweep
	perIP  map[netip.Addr]int
	limits Limits

	// sends holds the buckets of pages' sends over HTTP, by address: the
	// address stands for the connection, which an HTTP send has not.
	sendMu     sync.Mutex // taken before mu, never after
	sends      map[netip.Addr]*bucket
	sendsSwept int
}

func newGuard(l Limits) *guard {
	if l.Burst <= 0 {
		l.Burst = max(1, int(math.Ceil(l.Rate)))
	}
	if l.UserBurst <= 0 {
		l.UserBurst = max(1, int(math.Ceil(l.UserRate)))
	}
	return &guard{users: map[string]*bucket{}, perIP: map[netip.Addr]int{}, sends: map[netip.Addr]*bucket{}, limits: l}
}

// allowMessage takes one token from the connection's bucket and the user's,
// or none when either is empty; then it returns the refusal to send.
func (g *guard) allowMessage(conn *bucket, user, clientID string) *refusal {
	l := &g.limits
	if l.Rate <= 0 && l.UserRate <= 0 {
		return nil
	}
	now := clock()
	var connLevel float64
	if l.Rate > 0 {
		if connLevel = conn.level(now, l.Rate, l.Burst); connLevel < 1 {
			return rateLimited(clientID, fmt.Sprintf("at most %g messages a second (bursts of %d) per connection", l.Rate, l.Burst), wait(connLevel, l.Rate))
		}
	}
	if l.UserRate > 0 {
		g.mu.Lock()
		ub := g.users[user]
		if ub == nil {
			sweep(g.users, &g.swept, now, l.UserRate, l.UserBurst)
			ub = &bucket{}
			g.users[user] = ub
		}
		level := ub.level(now, l.UserRate, l.UserBurst)
		if level < 1 {
			g.mu.Unlock()
			return rateLimited(clientID, fmt.Sprintf("at most %g messages a second (bursts of %d) per user", l.UserRate, l.UserBurst), wait(level, l.UserRate))
		}
		ub.take(now, level)
		g.mu.Unlock()
	}
	if l.Rate > 0 {
		conn.take(now, connLevel)
	}
	return nil
}

// allowSend is allowMessage for a page's send over HTTP: the address's
// bucket stands for the connection's.
func (g *guard) allowSend(ip netip.Addr, user, clientID string) *refusal {
	if g.limits.Rate <= 0 && g.limits.UserRate <= 0 {
		return nil
	}
	g.sendMu.Lock()
	defer g.sendMu.Unlock()
	b := g.sends[ip]
	if b == nil {
		sweep(g.sends, &g.sendsSwept, clock(), g.limits.Rate, g.limits.Burst)
		b = &bucket{}
		g.sends[ip] = b
	}
	return g.allowMessage(b, user, clientID)
}

func rateLimited(clientID, rule string, retry time.Duration) *refusal {
	ms := max(1, retry.Milliseconds())
	return &refusal{code: codeRateLimited, clientID: clientID, retryAfterMs: ms,
		message: fmt.Sprintf("too many messages: %s; this one was not stored, send it again in %d ms", rule, ms)}
}

const codeRateLimited = "rate_limited"

// sweep forgets the buckets that have refilled at rate in bursts of burst
// (they are as if new), once the map has doubled since the last sweep
// (*swept, its size then): amortised O(1) per new key.
func sweep[K comparable](m map[K]*bucket, swept *int, now int64, rate float64, burst int) {
	if len(m) < 2*max(*swept, 512) {
		return
	}
	for k, b := range m {
		if b.level(now, rate, burst) >= float64(burst) {
			delete(m, k)
		}
	}
	*swept = len(m)
}

// ipFull reports whether ip already has MaxConnsPerIP connections open. It
// answers before the upgrade; acquireIP, after it, is the binding check.
func (g *guard) ipFull(ip netip.Addr) bool {
	if g.limits.MaxConnsPerIP <= 0 {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.perIP[ip] >= g.limits.MaxConnsPerIP
}

// acquireIP counts one more connection from ip unless that is one too many.
func (g *guard) acquireIP(ip netip.Addr) bool {
	if g.limits.MaxConnsPerIP <= 0 {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.perIP[ip] >= g.limits.MaxConnsPerIP {
		return false
	}
	g.perIP[ip]++
	return true
}

func (g *guard) releaseIP(ip netip.Addr) {
	if g.limits.MaxConnsPerIP <= 0 {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.perIP[ip]--; g.perIP[ip] <= 0 {
		delete(g.perIP, ip)
	}
}

// OpenFrom is how many WebSocket connections ip has open on this instance
// (counted only when MaxConnsPerIP is set).
func (s *Server) OpenFrom(ip string) int {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return 0
	}
	s.guard.mu.Lock()
	defer s.guard.mu.Unlock()
	return s.guard.perIP[addr.Unmap()]
}

// clientIP is the address of the client: the peer, or, when the peer is a
// trusted proxy, the nearest address in X-Forwarded-For that is not one.
func (s *Server) clientIP(c *fiber.Ctx) netip.Addr {
	peer, _ := netip.AddrFromSlice(c.Context().RemoteIP())
	peer = peer.Unmap()
	if !trusted(s.guard.limits.TrustedProxies, peer) {
		return peer
	}
	hops := strings.Split(c.Get(fiber.HeaderXForwardedFor), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		ip, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // a garbled hop: trust nothing further left
		}
		if ip = ip.Unmap(); !trusted(s.guard.limits.TrustedProxies, ip) {
			return ip
		}
		peer = ip
	}
	return peer
}

func trusted(proxies []netip.Prefix, ip netip.Addr) bool {
	for _, p := range proxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// checkIP refuses a chat request, before the upgrade, from an address
// that has MaxConnsPerIP connections open already.
func (s *Server) checkIP(c *fiber.Ctx, ip netip.Addr) (bool, error) {
	if s.guard.ipFull(ip) {
		c.Set(fiber.HeaderRetryAfter, "10")
		return false, s.refuseHandshake(c, refusedPerIP, fiber.StatusTooManyRequests,
			fmt.Sprintf("this address has %d chat connections open, the most allowed; close one first", s.guard.limits.MaxConnsPerIP))
	}
	return true, nil
}

// admitIP counts the upgraded connection against its address. Only
// concurrent handshakes that all passed checkIP can be over the cap here:
// they are closed with 1008 (policy violation). release undoes it.
func (s *Server) admitIP(sess *session, ip netip.Addr) (release func(), ok bool) {
	if !s.guard.acquireIP(ip) {
		s.refused(refusedPerIP, sess.log.remote)
		sess.refuseWith(websocket.ClosePolicyViolation, "too many connections",
			encode(errorFrame{Type: "error", Code: "too_many_connections", Message: "this address has too many chat connections open"}))
		return nil, false
	}
	return func() { s.guard.releaseIP(ip) }, true
}
