package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2"
	"github.com/golang-jwt/jwt/v5"
)

// authLeeway forgives clock skew between the token's issuer and this server
// when checking exp and nbf: small, so an expired token is not honoured long.
const authLeeway = 30 * time.Second

// MinSecretBytes is the shortest AUTH_SECRET accepted: HS256 keys shorter
// than the hash output (32 bytes) make brute-forcing a captured token easier.
const MinSecretBytes = 32

// Claims is what an xroom token carries: the standard claims (sub is the
// user name, exp is required) and the rooms it may join.
type Claims struct {
	jwt.RegisteredClaims
	// Rooms limits the rooms the token opens: path.Match glob patterns
	// ("lobby", "team-*"). Absent means every room; an empty list, none.
	Rooms RoomPatterns `json:"rooms,omitzero"`
}

// RoomPatterns is the rooms claim. In JSON it is an array of patterns, or
// one string of comma-separated patterns ("lobby,team-*") for issuers that
// can only put strings in claims.
type RoomPatterns []string

// UnmarshalJSON accepts an array of strings or one comma-separated string.
func (p *RoomPatterns) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		*p = nil
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		var s string
		if json.Unmarshal(b, &s) != nil {
			return errors.New("rooms is an array of patterns or a comma-separated string")
		}
		list = ParseRoomPatterns(s)
	}
	for _, pat := range list {
		if err := checkRoomPattern(pat); err != nil {
			return err
		}
	}
	*p = append(RoomPatterns{}, list...) // present, even when empty
	return nil
}

// ParseRoomPatterns splits "lobby, team-*" into patterns, dropping empty ones.
func ParseRoomPatterns(s string) []string {
	out := []string{}
	for _, pat := range strings.Split(s, ",") {
		if pat = strings.TrimSpace(pat); pat != "" {
			out = append(out, pat)
		}
	}
	return out
}

func checkRoomPattern(pat string) error {
	if pat == "" || len(pat) > 200 {
		return errors.New("a room pattern is 1 to 200 characters")
	}
	if _, err := path.Match(pat, ""); err != nil {
		return fmt.Errorf("room pattern %.40q is malformed", pat)
	}
	return nil
}

// Allows reports whether the token opens room. A nil list opens every room.
func (p RoomPatterns) Allows(room string) bool {
	if p == nil {
		return true
	}
	for _, pat := range p {
		if ok, _ := path.Match(pat, room); ok {
			return true
		}
	}
	return false
}

// MintToken signs an HS256 token for user, valid for ttl from now, that
// opens the rooms matching patterns (nil: every room).
func MintToken(secret []byte, user string, patterns []string, ttl time.Duration, now time.Time) (string, error) {
	if len(secret) < MinSecretBytes {
		return "", fmt.Errorf("the secret is %d bytes; at least %d are needed", len(secret), MinSecretBytes)
	}
	if !ValidUser(user) {
		return "", fmt.Errorf("user %.40q is not 1 to 32 printable characters", user)
	}
	if ttl <= 0 {
		return "", errors.New("the lifetime must be positive")
	}
	for _, pat := range patterns {
		if err := checkRoomPattern(pat); err != nil {
			return "", err
		}
	}
	claims := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   user,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Rooms: patterns,
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}

// authError is a refused token: the status, code and message for the client.
// Messages never contain the token.
type authError struct {
	status        int
	code, message string
}

var (
	errTokenMissing = &authError{fiber.StatusUnauthorized, "token_required", "this server requires a token: pass ?token=<JWT> or Authorization: Bearer <JWT>"}
	errTokenExpired = &authError{fiber.StatusUnauthorized, "token_expired", "the token has expired; get a new one"}
	errTokenInvalid = &authError{fiber.StatusUnauthorized, "token_invalid", "the token is not valid here (malformed, wrongly signed, not HS256, or missing exp or sub)"}
)

// verifyToken checks an HS256 token against secret and returns its claims.
func verifyToken(secret []byte, raw string, now time.Time) (*Claims, *authError) {
	var claims Claims
	_, err := jwt.ParseWithClaims(raw, &claims,
		func(*jwt.Token) (any, error) { return secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(authLeeway),
		jwt.WithTimeFunc(func() time.Time { return now }),
	)
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, errTokenExpired
	default:
		return nil, errTokenInvalid
	}
	if !ValidUser(claims.Subject) {
		return nil, errTokenInvalid
	}
	return &claims, nil
}

// authOn reports whether AUTH_SECRET is set.
func (s *Server) authOn() bool { return len(s.cfg.AuthSecret) > 0 }

// tokenFrom finds the token of a request: Authorization: Bearer <JWT>, or
// the token query parameter (browsers cannot set headers on a WebSocket).
func tokenFrom(c *fiber.Ctx) string {
	if tok, ok := strings.CutPrefix(c.Get(fiber.HeaderAuthorization), "Bearer "); ok {
		return strings.TrimSpace(tok)
	}
	return string(c.Context().QueryArgs().Peek("token"))
}

// authenticate checks the request's token when authentication is on and
// keeps its claims for the handlers. It answers 401 itself and returns false.
func (s *Server) authenticate(c *fiber.Ctx) (bool, error) {
	if !s.authOn() {
		return true, nil
	}
	raw := tokenFrom(c)
	aerr := errTokenMissing
	var claims *Claims
	if raw != "" {
		claims, aerr = verifyToken(s.cfg.AuthSecret, raw, time.Now())
	}
	if aerr != nil {
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="xroom", error="invalid_token"`)
		s.log.Debug("token refused", "path", c.Path(), "code", aerr.code, "remote", c.IP())
		return false, apiError(c, aerr.status, aerr.code, aerr.message)
	}
	c.Locals(claimsKey, claims)
	return true, nil
}

const claimsKey = "xroom.claims"

// roomAllowed reports whether the request's token opens room (always true with auth off).
func (s *Server) roomAllowed(c *fiber.Ctx, room string) bool {
	claims, _ := c.Locals(claimsKey).(*Claims)
	return claims == nil || claims.Rooms.Allows(room)
}

func roomForbidden(c *fiber.Ctx) error {
	return apiError(c, fiber.StatusForbidden, "room_forbidden", "your token does not open this room")
}

// authChat runs before a chat connection (WebSocket or SSE) is served,
// after the user parameter was read into req: with authentication on, the
// user is the token's subject and the room must match its rooms claim. A
// user parameter that names someone else is refused.
func (s *Server) authChat(c *fiber.Ctx, req *joinRequest) (bool, error) {
	if ok, err := s.authenticate(c); !ok || !s.authOn() {
		return ok, err
	}
	claims := c.Locals(claimsKey).(*Claims)
	req.claims = claims
	args := c.Context().QueryArgs()
	if args.Has("user") && string(args.Peek("user")) != claims.Subject {
		return false, apiError(c, fiber.StatusForbidden, "user_mismatch", "user must be left out or equal the token's subject")
	}
	if !s.roomAllowed(c, c.Params("room")) {
		return false, roomForbidden(c)
	}
	req.user = claims.Subject
	return true, nil
}

// authRead guards the HTTP reads (rooms list, history) when authentication
// is on: a valid token is needed, and a history read needs its room allowed.
func (s *Server) authRead(c *fiber.Ctx) error {
	if ok, err := s.authenticate(c); !ok {
		return err
	}
	if room := c.Params("room"); room != "" && !s.roomAllowed(c, room) {
		return roomForbidden(c)
	}
	return c.Next()
}

// tokenDeadline is when the connection's token stops being honoured (its
// exp plus the leeway), in Unix nanoseconds; 0 without authentication.
func tokenDeadline(c *Claims) int64 {
	if c == nil || c.ExpiresAt == nil {
		return 0
	}
	return c.ExpiresAt.Add(authLeeway).UnixNano()
}

// tokenExpired reports whether the session's token has run out, and then
// closes the connection with 1008 "token expired": the client reconnects
// with a fresh token. It is checked on each message and each ping, so an
// expired token is dropped within a ping period without a timer of its own.
func (s *session) tokenExpired() bool {
	e := s.expires.Load()
	if e == 0 || e > 0 && time.Now().UnixNano() < e {
		return false
	}
	if !s.expires.CompareAndSwap(e, -1) { // closing already
		return true
	}
	s.requestClose(websocket.ClosePolicyViolation, "token expired")
	_ = s.withConn(func() error {
		return s.conn.SetReadDeadline(time.Now().Add(closeGrace))
	})
	return true
}
