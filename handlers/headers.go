package handlers

import (
	"github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
)

// contentSecurityPolicy lets the page load its own scripts, styles and
// images and nothing else: no inline script or style, no eval, no plugins,
// no <base> rewriting, and no framing (against clickjacking). connect-src
// 'self' covers fetch and, in CSP Level 3 browsers, ws:/wss: to the same
// host; the explicit ws/wss sources are added per request for older ones.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

// securityHeaders sets the browser hardening headers on every answer: the
// page, its scripts and styles, and the API (a JSON error rendered by a
// browser must not run or be framed either).
func securityHeaders(c *fiber.Ctx) error {
	if !websocket.IsWebSocketUpgrade(c) {
		setSecurityHeaders(c)
		return c.Next()
	}
	// A WebSocket handshake: a refusal (JSON error) gets the headers, an
	// accepted upgrade does not. They mean nothing on a 101, and fasthttp
	// keeps the response headers for as long as the connection lives:
	// about 1 KB per idle connection.
	err := c.Next()
	if c.Response().StatusCode() != fiber.StatusSwitchingProtocols {
		setSecurityHeaders(c)
	}
	return err
}

func setSecurityHeaders(c *fiber.Ctx) {
	h := &c.Response().Header
	csp := contentSecurityPolicy + "; connect-src 'self'"
	if host := string(c.Request().Host()); validHostHeader(host) {
		csp += " ws://" + host + " wss://" + host
	}
	h.Set(fiber.HeaderContentSecurityPolicy, csp)
	h.Set(fiber.HeaderXContentTypeOptions, "nosniff")
	h.Set(fiber.HeaderReferrerPolicy, "no-referrer")
	h.Set(fiber.HeaderXFrameOptions, "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

// validHostHeader accepts host[:port] of letters, digits, '.', '-', ':' and
// IPv6 brackets, so a forged Host cannot inject directives into the policy.
func validHostHeader(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	for i := 0; i < len(h); i++ {
		ch := h[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '.' || ch == '-' || ch == ':' || ch == '[' || ch == ']') {
			return false
		}
	}
	return true
}
