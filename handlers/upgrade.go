package handlers

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"strings"

	"github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"

	"github.com/xroom/xroom/streams"
)

// wsVersion is the only WebSocket version there is (RFC 6455).
const wsVersion = "13"

// beforeUpgrade checks everything about a WebSocket request before the
// upgrade, so a bad request is a plain HTTP error a client can read.
func (s *Server) beforeUpgrade(c *fiber.Ctx) error {
	if !websocket.IsWebSocketUpgrade(c) {
		return upgradeRequired(c, "upgrade_required", "this endpoint speaks WebSocket")
	}
	if ok, err := checkHandshake(c); !ok {
		return err
	}
	return s.beforeJoin(c, sinceFromQuery)
}

// sinceSource says where a chat request's resume position may come from.
type sinceSource int

const (
	sinceFromQuery sinceSource = iota // ?since= (WebSocket)
	// sinceFromEventID: the Last-Event-ID header, else ?since= (SSE). The
	// header wins: an EventSource reconnects to the URL it was opened
	// with, so its ?since= is stale once an event with an id came.
	sinceFromEventID
)

// joinRequest is a chat request that passed beforeJoin: everything the
// checks found, in one value, so that serveWS and serveSSE start from what
// was checked rather than reading the query again.
type joinRequest struct {
	room string // its own copy: Fiber's points into the reused request
	user string // the token's subject with authentication, else ?user= or an anon- name
	// resume is the client's position: ?since= (or for SSE Last-Event-ID)
	// and ?epoch=, the epoch the client last saw. The join plans from it
	// (streams.Store.PlanResume).
	resume streams.Resume
	claims *Claims    // the token's claims; nil without authentication
	ip     netip.Addr // the client's address (clientIP), counted against MaxConnsPerIP
}

// joinKey holds the *joinRequest in the request's locals, from beforeJoin
// to the handler (the WebSocket library copies locals to its Conn).
const joinKey = "xroom.join"

// feed is the start of a connection's feed: its room, user and position.
func (r *joinRequest) feed(s *Server) feed {
	return feed{srv: s, room: r.room, user: r.user, resume: r.resume}
}

// beforeJoin runs the checks every chat connection passes before it is
// served, WebSocket or SSE, in this order: origin, connections from the
// address, since, user, token, epoch, capacity. What they find is left
// in the request's locals as one *joinRequest (joinKey).
func (s *Server) beforeJoin(c *fiber.Ctx, from sinceSource) error {
	if !s.originAllowed(c) {
		return apiError(c, fiber.StatusForbidden, "bad_origin", "this origin may not open chat connections; see ALLOWED_ORIGINS")
	}
	req := &joinRequest{room: strings.Clone(c.Params("room")), ip: s.clientIP(c)}
	if ok, err := s.checkIP(c, req.ip); !ok {
		return err
	}
	if ok, err := readSince(c, from, req); !ok {
		return err
	}
	args := c.Context().QueryArgs()
	req.user = "anon-" + streams.RandomName(4)
	if args.Has("user") {
		req.user = string(args.Peek("user"))
		if !ValidUser(req.user) {
			return apiError(c, fiber.StatusBadRequest, "bad_user", "user is 1 to 32 printable characters")
		}
	}
	if ok, err := s.authChat(c, req); !ok {
		return err
	}
	if args.Has("epoch") {
		req.resume.At.Epoch = string(args.Peek("epoch"))
		if !validEpoch(req.resume.At.Epoch) {
			return apiError(c, fiber.StatusBadRequest, "bad_epoch", "epoch is the value of a ready frame's epoch field")
		}
	}
	c.Locals(joinKey, req)
	return s.checkCapacity(c)
}

// readSince reads the resume position into req. An empty Last-Event-ID
// is no position (EventSource sends none then; other clients may).
func readSince(c *fiber.Ctx, from sinceSource, req *joinRequest) (bool, error) {
	if from == sinceFromEventID {
		if raw := c.Get("Last-Event-ID"); raw != "" {
			since, err := streams.ParseID(raw)
			if err != nil {
				return false, apiError(c, fiber.StatusBadRequest, "bad_last_event_id", "Last-Event-ID is the id of an event of this stream: a stream ID such as 1732380000000-0")
			}
			req.resume.At.ID, req.resume.Since, req.resume.EventID = since, true, true
			return true, nil
		}
	}
	args := c.Context().QueryArgs()
	if args.Has("since") {
		since, err := streams.ParseID(string(args.Peek("since")))
		if err != nil {
			return false, apiError(c, fiber.StatusBadRequest, "bad_since", "since is a stream ID such as 1732380000000-0, or 0 for all history")
		}
		req.resume.At.ID, req.resume.Since = since, true
	}
	return true, nil
}

// checkHandshake holds the client's handshake to RFC 6455 (4.2.1, 4.2.2)
// before the library sees it: the library's own refusal of a version
// loses its Sec-WebSocket-Version header (fasthttp's ctx.Error resets the
// response), and it takes any non-empty key.
func checkHandshake(c *fiber.Ctx) (bool, error) {
	if !hasToken(c.Get(fiber.HeaderSecWebSocketVersion), wsVersion) {
		return false, upgradeRequired(c, "unsupported_version", "this server speaks WebSocket version 13 (RFC 6455): send Sec-WebSocket-Version: 13")
	}
	if key, err := base64.StdEncoding.DecodeString(c.Get(fiber.HeaderSecWebSocketKey)); err != nil || len(key) != 16 {
		return false, apiError(c, fiber.StatusBadRequest, "bad_handshake", "Sec-WebSocket-Key must be 16 random bytes in base64 (RFC 6455 4.1)")
	}
	return true, nil
}

// upgradeRequired answers 426 with the headers RFC 7231 (6.5.15) and RFC
// 6455 (4.2.2) ask of it: the protocol to upgrade to, and its version.
func upgradeRequired(c *fiber.Ctx, code, message string) error {
	c.Set(fiber.HeaderUpgrade, "websocket")
	c.Set(fiber.HeaderSecWebSocketVersion, wsVersion)
	return apiError(c, fiber.StatusUpgradeRequired, code, message)
}

// hasToken reports whether the comma-separated list holds token.
func hasToken(list, token string) bool {
	for _, t := range strings.Split(list, ",") {
		if strings.TrimSpace(t) == token {
			return true
		}
	}
	return false
}

// checkCapacity refuses the handshake when the server is stopping or holds
// MAX_CONNS connections: a 503 with a JSON body is something a client can
// read and retry on, where a server out of descriptors could only drop it.
func (s *Server) checkCapacity(c *fiber.Ctx) error {
	s.mu.Lock()
	stopping, open := s.stopping, len(s.conns)
	s.mu.Unlock()
	if stopping {
		return s.refuseHandshake(c, refusedStopping, fiber.StatusServiceUnavailable, "the server is shutting down; reconnect")
	}
	if most := s.guard.limits.MaxConns; most > 0 && open >= most {
		c.Set(fiber.HeaderRetryAfter, "5")
		return s.refuseHandshake(c, refusedFull, fiber.StatusServiceUnavailable,
			fmt.Sprintf("the server holds %d chat connections, the most it takes (MAX_CONNS); reconnect later, or to another instance", most))
	}
	return c.Next()
}

func validEpoch(e string) bool {
	if e == "" || len(e) > 64 {
		return false
	}
	for i := 0; i < len(e); i++ {
		if e[i] <= ' ' || e[i] > '~' {
			return false
		}
	}
	return true
}
