package handlers

import (
	"encoding/base64"
	"fmt"
	"net/url"
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
	if !s.originAllowed(c) {
		return apiError(c, fiber.StatusForbidden, "bad_origin", "this origin may not open chat connections; see ALLOWED_ORIGINS")
	}
	if ok, err := s.checkIP(c); !ok {
		return err
	}
	args := c.Context().QueryArgs()
	if args.Has("since") {
		since, err := streams.ParseID(string(args.Peek("since")))
		if err != nil {
			return apiError(c, fiber.StatusBadRequest, "bad_since", "since is a stream ID such as 1732380000000-0, or 0 for all history")
		}
		c.Locals("since", since)
	}
	user := "anon-" + streams.RandomName(4)
	if args.Has("user") {
		user = string(args.Peek("user"))
		if !ValidUser(user) {
			return apiError(c, fiber.StatusBadRequest, "bad_user", "user is 1 to 32 printable characters")
		}
	}
	c.Locals("user", user)
	if ok, err := s.authWS(c); !ok {
		return err
	}
	if args.Has("epoch") {
		epoch := string(args.Peek("epoch"))
		if !validEpoch(epoch) {
			return apiError(c, fiber.StatusBadRequest, "bad_epoch", "epoch is the value of a ready frame's epoch field")
		}
		c.Locals("epoch", epoch)
	}
	return s.checkCapacity(c)
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
	stopping, open := s.stopping, len(s.sessions)
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

// originAllowed stops cross-site WebSocket hijacking: a browser page from
// another origin may connect only when ALLOWED_ORIGINS names it.
func (s *Server) originAllowed(c *fiber.Ctx) bool {
	origin := c.Get(fiber.HeaderOrigin)
	if origin == "" {
		return true // not a browser: nothing to hijack
	}
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, string(c.Request().Host()))
}
