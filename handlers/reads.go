package handlers

// Read positions and unread counts: the WebSocket's {"type":"read"} frame,
// the read frame a user's other connections get, and the HTTP API
// (POST/GET /api/rooms/{room}/read, GET /api/users/{user}/unread).

import (
	"context"
	"encoding/json"
	"net/url"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/xroom/xroom/streams"
)

const (
	// codeBadID refuses a read mark whose id is missing or not a stream ID.
	codeBadID = "bad_id"
	// defaultReadsLimit and maxReadsLimit bound GET /api/rooms/{room}/read
	// (?limit=): a room's readers are listed, never scanned whole.
	defaultReadsLimit = 100
	maxReadsLimit     = 1000
	// defaultUnreadRooms and maxUnreadRooms bound the rooms of one
	// GET /api/users/{user}/unread (?limit=): each costs one script call.
	defaultUnreadRooms = 100
	maxUnreadRooms     = 1000
)

// readFrame is what decodeFrame returns for {"type":"read"}: not a
// refusal; markRead reads the id.
var readFrame = &refusal{code: "read"}

var badIDRefusal = &refusal{code: codeBadID, message: "id is a stream ID such as 1732380000000-0 (or 1732380000000)"}

// readState is a connection's part in read positions.
type readState struct {
	// marked is the position Redis last answered to this connection's
	// marks (reader only): a mark at or before it needs no Redis call.
	marked streams.ID
}

// readJSON is a read frame as clients get it, and a read position in the API.
type readJSON struct {
	Type string `json:"type,omitempty"`
	Room string `json:"room,omitempty"`
	User string `json:"user,omitempty"`
	ID   string `json:"id"`
}

// encodeRead is the frame of a read event: the user's new read position.
// Only the user's other connections send it (see session.forMe).
func encodeRead(room string, ev *streams.Event) []byte {
	return encode(readJSON{Type: "read", Room: room, ID: ev.Position.String()})
}

// decodeRead reads the id of a read frame or body: a stream ID as a string.
func decodeRead(data []byte) (streams.ID, *refusal) {
	var f struct {
		ID any `json:"id"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return streams.ID{}, &refusal{code: codeBadJSON, message: jsonProblem(err)}
	}
	raw, ok := f.ID.(string)
	if !ok {
		return streams.ID{}, badIDRefusal
	}
	id, err := streams.ParseID(raw)
	if err != nil {
		return streams.ID{}, badIDRefusal
	}
	return id, nil
}

// markRead handles {"type":"read","id":"<stream id>"}: the user's read
// position in the room moves forward to it (never back; past the room's
// newest entry it stops there), and the user's other connections in the
// room get a read frame. Not answered, except by an error frame (bad_id,
// unavailable); the connection lives on. It runs on the reader, so a flood
// of marks is slowed to one Redis call at a time.
func (s *session) markRead(data []byte) {
	id, bad := decodeRead(data)
	if bad != nil {
		s.queueError(bad)
		return
	}
	if !s.reads.marked.Less(id) {
		return // already there: nothing would move
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.srv.cfg.RedisTimeout)
	defer cancel()
	pos, _, err := s.srv.hub.Store().MarkRead(ctx, s.room, s.user, id, s.srv.readEvent(s.readConn))
	if err != nil {
		s.log.Warn("read position not stored", "err", err)
		s.queueError(&refusal{code: codeUnavailable, message: "the read position was not stored; send it again"})
		return
	}
	s.reads.marked = pos
}

// readEvent is how a mark by conn ("" over HTTP) is announced: not in a
// room too big for presence events (PRESENCE_MAX_MEMBERS), for the same
// reason.
func (s *Server) readEvent(conn string) streams.ReadEvent {
	return streams.ReadEvent{Conn: conn, MaxMembers: s.presence.Options().MaxMembers}
}

// readRoutes adds the read-position and unread routes to the API group.
func (s *Server) readRoutes(api fiber.Router) {
	api.Get("/rooms/:room/read", s.validRoom, s.authRead, s.readPositions)
	api.Post("/rooms/:room/read", s.validRoom, s.markReadAPI)
	api.Get("/users/:user/unread", s.unreadAPI)
}

// markReadAPI answers POST /api/rooms/{room}/read {"id": "<stream id>"}:
// 204 once the position is at or past id (or clamped to the room's newest
// entry). The user is the token's with authentication, else ?user=.
func (s *Server) markReadAPI(c *fiber.Ctx) error {
	user, err := s.actingUser(c)
	if user == "" {
		return err
	}
	if !utf8.Valid(c.Body()) {
		return apiError(c, fiber.StatusBadRequest, codeBadUTF8, "the body is not valid UTF-8")
	}
	id, bad := decodeRead(c.Body())
	if bad != nil {
		return apiError(c, fiber.StatusBadRequest, bad.code, bad.message)
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), s.cfg.RedisTimeout)
	defer cancel()
	if _, _, err := s.hub.Store().MarkRead(ctx, c.Params("room"), user, id, s.readEvent("")); err != nil {
		return s.unavailable(c, err)
	}
	return c.SendStatus(fiber.StatusNoContent)
}

// actingUser is who a write on the user's behalf is for: the token's
// subject with authentication (a ?user= naming someone else is refused),
// else ?user=. It answers the refusal itself and returns "".
func (s *Server) actingUser(c *fiber.Ctx) (string, error) {
	args := c.Context().QueryArgs()
	if s.authOn() {
		if ok, err := s.authenticate(c); !ok {
			return "", err
		}
		if !s.roomAllowed(c, c.Params("room")) {
			return "", roomForbidden(c)
		}
		sub := c.Locals(claimsKey).(*Claims).Subject
		if args.Has("user") && string(args.Peek("user")) != sub {
			return "", apiError(c, fiber.StatusForbidden, "user_mismatch", "user must be left out or equal the token's subject")
		}
		return sub, nil
	}
	user := string(args.Peek("user"))
	if !ValidUser(user) {
		return "", apiError(c, fiber.StatusBadRequest, "bad_user", "give ?user=NAME, 1 to 32 printable characters")
	}
	return user, nil
}

// readPositions answers GET /api/rooms/{room}/read: the users' read
// positions, newest first ("seen by"), or one user's with ?user=. Anyone
// who can read the room can read them.
func (s *Server) readPositions(c *fiber.Ctx) error {
	room := c.Params("room")
	ctx, cancel := context.WithTimeout(c.UserContext(), s.cfg.RedisTimeout)
	defer cancel()
	store := s.hub.Store()
	out := []readJSON{}
	args := c.Context().QueryArgs()
	if args.Has("user") {
		user := string(args.Peek("user"))
		if !ValidUser(user) {
			return apiError(c, fiber.StatusBadRequest, "bad_user", "user is 1 to 32 printable characters")
		}
		id, ok, err := store.ReadPosition(ctx, room, user)
		if err != nil {
			return s.unavailable(c, err)
		}
		if ok {
			out = append(out, readJSON{User: user, ID: id.String()})
		}
		return c.JSON(fiber.Map{"room": room, "reads": out})
	}
	limit, err := queryLimit(c, defaultReadsLimit, maxReadsLimit)
	if limit == 0 {
		return err
	}
	list, partial, err := store.ReadPositions(ctx, room, limit)
	if err != nil {
		return s.unavailable(c, err)
	}
	for _, p := range list {
		out = append(out, readJSON{User: p.User, ID: p.ID.String()})
	}
	body := fiber.Map{"room": room, "reads": out}
	if partial {
		body["partial"] = true
	}
	return c.JSON(body)
}

type unreadJSON struct {
	Room     string `json:"room"`
	Unread   int    `json:"unread"`
	More     bool   `json:"more,omitempty"`
	LastRead string `json:"last_read"`
	LastID   string `json:"last_id"`
}

// unreadAPI answers GET /api/users/{user}/unread: the user's unread count
// in each room they have a read position in or have written to, newest
// activity first. With authentication a token reads only its own user's
// counts, and only for rooms it opens.
func (s *Server) unreadAPI(c *fiber.Ctx) error {
	user, err := url.PathUnescape(c.Params("user"))
	if err != nil || !ValidUser(user) {
		return apiError(c, fiber.StatusBadRequest, "bad_user", "a user is 1 to 32 printable characters")
	}
	if ok, err := s.authenticate(c); !ok {
		return err
	}
	if claims, _ := c.Locals(claimsKey).(*Claims); claims != nil && claims.Subject != user {
		return apiError(c, fiber.StatusForbidden, "user_forbidden", "a token reads only its own user's unread counts")
	}
	limit, err := queryLimit(c, defaultUnreadRooms, maxUnreadRooms)
	if limit == 0 {
		return err
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), s.cfg.RedisTimeout)
	defer cancel()
	list, err := s.hub.Store().Unread(ctx, user, limit, s.cfg.UnreadCap)
	if err != nil {
		return s.unavailable(c, err)
	}
	out := make([]unreadJSON, 0, len(list))
	for _, u := range list {
		if s.roomAllowed(c, u.Room) {
			out = append(out, unreadJSON{Room: u.Room, Unread: u.Count, More: u.More, LastRead: u.LastRead.String(), LastID: u.LastID.String()})
		}
	}
	return c.JSON(fiber.Map{"rooms": out})
}
