package handlers

// Cross-origin pages. A WebSocket needs no CORS: the origin check
// (originAllowed) is all. An EventSource or a fetch from a page of another
// origin that ALLOWED_ORIGINS names needs the answer to say so, or the
// browser keeps it from the page.

import (
	"net/url"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// corsMaxAge is how long (seconds) a browser may keep a preflight's
// answer: sending is then one request, not two.
const corsMaxAge = "600"

// originAllowed stops cross-site WebSocket hijacking (and cross-site
// sends): a browser page from another origin may connect only when
// ALLOWED_ORIGINS names it.
func (s *Server) originAllowed(c *fiber.Ctx) bool {
	origin := c.Get(fiber.HeaderOrigin)
	return origin == "" || s.listedOrigin(origin) || sameHost(c, origin) // no Origin: not a browser, nothing to hijack
}

// listedOrigin reports whether ALLOWED_ORIGINS names origin.
func (s *Server) listedOrigin(origin string) bool {
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

// sameHost reports whether origin is the host the request was sent to.
func sameHost(c *fiber.Ctx, origin string) bool {
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, string(c.Request().Host()))
}

// allowOrigin lets a page of a listed origin read the answer.
func (s *Server) allowOrigin(c *fiber.Ctx) {
	origin := c.Get(fiber.HeaderOrigin)
	if origin == "" || sameHost(c, origin) || !s.listedOrigin(origin) {
		return
	}
	c.Set(fiber.HeaderAccessControlAllowOrigin, origin)
	c.Vary(fiber.HeaderOrigin)
}

// preflight answers a listed origin's CORS preflight of a send: POST, with
// a JSON body and a token.
func (s *Server) preflight(c *fiber.Ctx) error {
	s.allowOrigin(c)
	if len(c.Response().Header.Peek(fiber.HeaderAccessControlAllowOrigin)) == 0 {
		return apiError(c, fiber.StatusForbidden, "bad_origin", "this origin may not send here; see ALLOWED_ORIGINS")
	}
	c.Set(fiber.HeaderAccessControlAllowMethods, fiber.MethodPost)
	c.Set(fiber.HeaderAccessControlAllowHeaders, "Authorization, Content-Type")
	c.Set(fiber.HeaderAccessControlMaxAge, corsMaxAge)
	return c.SendStatus(fiber.StatusNoContent)
}
