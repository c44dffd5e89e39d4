package handlers

// Who may send over HTTP (POST /api/rooms/{room}/messages): a backend
// with API_KEY, as ever, and a page whose messages cannot go over a
// WebSocket (the SSE transport), with the rights the WebSocket gives it.

import (
	"crypto/subtle"
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"
)

// sender is who a send over HTTP is stored as.
type sender struct {
	// user is the token's subject, which the body may only repeat; ""
	// when the body names the user (a backend, or a page without
	// authentication).
	user string
	// page: a browser's send, held to the WebSocket's rules (origin,
	// rate limits) rather than trusted as a backend is.
	page bool
}

// whoSends decides who a send is from, in this order:
//   - Authorization: Bearer API_KEY: a trusted backend, which names the user.
//   - A browser Origin that may not open chat connections: 403 bad_origin.
//   - With authentication on, a user token (Authorization: Bearer, or
//     ?token= as on the WebSocket): the token's user, in the rooms it opens.
//   - Without it, a browser request (an Origin, checked above): the user
//     it names, as the WebSocket's user= allows anyone to.
//   - Anything else needs API_KEY: 401, or 403 publish_disabled without one.
//
// When it refuses, it has answered (ok false, with the handler's error).
func (s *Server) whoSends(c *fiber.Ctx) (from sender, ok bool, err error) {
	bearer, hasBearer := strings.CutPrefix(c.Get(fiber.HeaderAuthorization), "Bearer ")
	if hasBearer && s.cfg.APIKey != "" && subtle.ConstantTimeCompare([]byte(bearer), []byte(s.cfg.APIKey)) == 1 {
		return sender{}, true, nil
	}
	origin := c.Get(fiber.HeaderOrigin)
	if !s.originAllowed(c) {
		return sender{}, false, apiError(c, fiber.StatusForbidden, "bad_origin", "this origin may not send to chat rooms; see ALLOWED_ORIGINS")
	}
	s.allowOrigin(c)
	if s.authOn() && (hasBearer || origin != "" || c.Context().QueryArgs().Has("token")) {
		if ok, err := s.authenticate(c); !ok {
			return sender{}, false, err
		}
		if !s.roomAllowed(c, c.Params("room")) {
			return sender{}, false, roomForbidden(c)
		}
		return sender{user: c.Locals(claimsKey).(*Claims).Subject, page: true}, true, nil
	}
	if !s.authOn() && origin != "" {
		return sender{page: true}, true, nil
	}
	if s.cfg.APIKey == "" {
		return sender{}, false, apiError(c, fiber.StatusForbidden, "publish_disabled",
			"publishing over HTTP without a browser Origin or a user token needs API_KEY on the server")
	}
	c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="xroom"`)
	return sender{}, false, apiError(c, fiber.StatusUnauthorized, "unauthorized", "send Authorization: Bearer <API_KEY>")
}

// userOf is the user a send is stored as: the token's, or the one the
// body names (which must then be a valid name). When it refuses, it has
// answered (ok false, with the handler's error).
func (from sender) userOf(c *fiber.Ctx, named *string) (user string, ok bool, err error) {
	if from.user != "" {
		if named != nil && *named != from.user {
			return "", false, apiError(c, fiber.StatusForbidden, "user_mismatch", "user must be left out or equal the token's subject")
		}
		return from.user, true, nil
	}
	if named == nil || !ValidUser(*named) {
		return "", false, apiError(c, fiber.StatusBadRequest, "bad_user", "user is 1 to 32 printable characters")
	}
	return *named, true, nil
}

// answerRateLimited answers a page's send over the limits with 429, when to
// send it again (Retry-After, and retry_after_ms as in the error frame),
// and its client_id.
func answerRateLimited(c *fiber.Ctx, r *refusal) error {
	c.Set(fiber.HeaderRetryAfter, strconv.FormatInt((r.retryAfterMs+999)/1000, 10))
	body := fiber.Map{"code": r.code, "message": r.message, "retry_after_ms": r.retryAfterMs}
	if r.clientID != "" {
		body["client_id"] = r.clientID
	}
	return c.Status(fiber.StatusTooManyRequests).JSON(fiber.Map{"error": body})
}
