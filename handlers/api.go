package handlers

// The HTTP API: readiness, rooms, history and publishing.

import (
	"context"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/xroom/xroom/streams"
)

// apiError answers {"error": {"code", "message"}}.
func apiError(c *fiber.Ctx, status int, code, message string) error {
	return c.Status(status).JSON(fiber.Map{"error": fiber.Map{"code": code, "message": message}})
}

func (s *Server) readyz(c *fiber.Ctx) error {
	ctx, cancel := context.WithTimeout(c.UserContext(), 2*time.Second)
	defer cancel()
	if err := s.hub.Store().Ping(ctx); err != nil {
		s.log.Warn("readiness check failed", "err", err)
		return apiError(c, fiber.StatusServiceUnavailable, "redis_unavailable", "Redis does not answer")
	}
	if err := s.hub.Health(); err != nil {
		return apiError(c, fiber.StatusServiceUnavailable, "tail_unavailable", err.Error())
	}
	return c.JSON(fiber.Map{"status": "ready"})
}

const (
	defaultRoomsLimit = 100
	maxRoomsLimit     = 1000
	defaultPageLimit  = 50
	maxPageLimit      = 500
)

// queryLimit reads ?limit=, between 1 and most.
func queryLimit(c *fiber.Ctx, def, most int) (int, error) {
	raw := c.Query("limit")
	if raw == "" {
		return def, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 || n > most {
		return 0, apiError(c, fiber.StatusBadRequest, "bad_limit", "limit is a whole number from 1 to "+strconv.Itoa(most))
	}
	return n, nil
}

type roomJSON struct {
	Room         string `json:"room"`
	LastID       string `json:"last_id"`
	LastActivity int64  `json:"last_activity"`
}

func (s *Server) listRooms(c *fiber.Ctx) error {
	limit, err := queryLimit(c, defaultRoomsLimit, maxRoomsLimit)
	if limit == 0 {
		return err
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), s.cfg.RedisTimeout)
	defer cancel()
	rooms, err := s.hub.Store().Rooms(ctx, limit)
	if err != nil {
		return s.unavailable(c, err)
	}
	out := make([]roomJSON, 0, len(rooms))
	for _, r := range rooms {
		if s.roomAllowed(c, r.Name) { // a token sees only the rooms it opens
			out = append(out, roomJSON{Room: r.Name, LastID: r.LastID.String(), LastActivity: r.LastActivity.UnixMilli()})
		}
	}
	return c.JSON(fiber.Map{"rooms": out})
}

func (s *Server) unavailable(c *fiber.Ctx, err error) error {
	s.log.Warn("redis call failed", "path", c.Path(), "err", err)
	return apiError(c, fiber.StatusServiceUnavailable, "redis_unavailable", "storage is unavailable right now; try again")
}

// history answers one page: ?before=ID (newest first, the default) or ?after=ID (oldest first).
func (s *Server) history(c *fiber.Ctx) error {
	room := c.Params("room")
	limit, err := queryLimit(c, defaultPageLimit, maxPageLimit)
	if limit == 0 {
		return err
	}
	args := c.Context().QueryArgs()
	if args.Has("before") && args.Has("after") {
		return apiError(c, fiber.StatusBadRequest, "bad_query", "give before or after, not both")
	}
	parse := func(name string) (streams.ID, bool) {
		id, err := streams.ParseID(string(args.Peek(name)))
		return id, err == nil
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), s.cfg.RedisTimeout)
	defer cancel()
	store := s.hub.Store()
	var entries []streams.Entry
	var next *string
	if args.Has("after") {
		after, ok := parse("after")
		if !ok {
			return apiError(c, fiber.StatusBadRequest, "bad_after", "after is a stream ID such as 1732380000000-0, or 0")
		}
		if entries, err = store.Range(ctx, room, after, limit); err != nil {
			return s.unavailable(c, err)
		}
	} else {
		before := streams.MaxID
		if args.Has("before") {
			var ok bool
			if before, ok = parse("before"); !ok {
				return apiError(c, fiber.StatusBadRequest, "bad_before", "before is a stream ID such as 1732380000000-0")
			}
		}
		if entries, err = store.RevRange(ctx, room, before, limit); err != nil {
			return s.unavailable(c, err)
		}
	}
	if len(entries) == limit {
		last := entries[len(entries)-1].ID.String()
		next = &last
	}
	msgs := make([]messageFrame, 0, len(entries))
	for i := range entries {
		if entries[i].HasMessage {
			msgs = append(msgs, newMessageFrame(room, &entries[i]))
		}
	}
	return c.JSON(fiber.Map{"room": room, "messages": msgs, "next": next})
}

type publishBody struct {
	User     *string `json:"user"`
	Message  *string `json:"message"`
	ClientID *string `json:"client_id"`
}

// publish stores a message sent by a trusted backend, or by a page that
// sends over HTTP (sender.go).
func (s *Server) publish(c *fiber.Ctx) error {
	from, ok, err := s.whoSends(c)
	if !ok {
		return err
	}
	if !utf8.Valid(c.Body()) { // json.Unmarshal would store U+FFFD in its place
		return apiError(c, fiber.StatusBadRequest, codeBadUTF8, "the body is not valid UTF-8")
	}
	var body publishBody
	if err := json.Unmarshal(c.Body(), &body); err != nil {
		return apiError(c, fiber.StatusBadRequest, codeBadJSON, jsonProblem(err))
	}
	m := streams.Message{}
	if m.User, ok, err = from.userOf(c, body.User); !ok {
		return err
	}
	if body.Message == nil || *body.Message == "" {
		return apiError(c, fiber.StatusBadRequest, codeEmpty, "message is required")
	}
	if !utf8.ValidString(*body.Message) {
		return apiError(c, fiber.StatusBadRequest, codeBadUTF8, "message is not valid UTF-8")
	}
	if len(*body.Message) > s.cfg.MaxMessageBytes {
		return apiError(c, fiber.StatusRequestEntityTooLarge, codeTooLarge, "message is over "+strconv.Itoa(s.cfg.MaxMessageBytes)+" bytes")
	}
	m.Text = *body.Message
	if body.ClientID != nil {
		if !ValidClientID(*body.ClientID) {
			return apiError(c, fiber.StatusBadRequest, codeBadClientID, "client_id is 1 to 64 characters from A-Z a-z 0-9 . _ -")
		}
		m.ClientID = *body.ClientID
	}
	if from.page {
		if r := s.guard.allowSend(s.clientIP(c), m.User, m.ClientID); r != nil {
			return answerRateLimited(c, r)
		}
	}
	if ok, err := s.vetPublish(c, c.Params("room"), &m); !ok { // the publish hook (hooks.go)
		return err
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), s.cfg.RedisTimeout)
	defer cancel()
	id, dup, err := s.hub.Store().Append(ctx, c.Params("room"), m)
	if err != nil {
		return s.unavailable(c, err)
	}
	status := fiber.StatusCreated
	if dup {
		status = fiber.StatusOK
	}
	return c.Status(status).JSON(fiber.Map{"id": id.String(), "duplicate": dup})
}
