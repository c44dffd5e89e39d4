package handlers

// The application's hooks, as the handlers see them: a publish hook asked
// before each message is stored, and the webhooks' status (GET /api/hooks).
// Both are implemented by the hooks package; handlers only call them.

import (
	"context"
	"crypto/subtle"
	"errors"
	"strconv"
	"strings"
	"sync"

	"github.com/gofiber/fiber/v2"

	"github.com/xroom/xroom/streams"
)

// PublishHook is asked before a message is stored (PUBLISH_HOOK_URL).
type PublishHook interface {
	// Check returns the text to store, maybe rewritten. An error that is a
	// Refusal refuses the message with the refusal's code and message; any
	// other error means the hook could not be asked, and the message is
	// refused as hook_unavailable.
	Check(ctx context.Context, room, user, text, clientID string) (string, error)
}

// Refusal is an error by which a PublishHook refuses a message: the sender
// gets an error frame (or a 403) with its code and message.
type Refusal interface {
	error
	Refusal() (code, message string)
}

// HooksStatus reports webhook delivery for GET /api/hooks: this instance's,
// and with room set, that room's.
type HooksStatus interface {
	Status(ctx context.Context, room string) (any, error)
}

// codeHookUnavailable: the publish hook did not answer in time, or failed,
// and PUBLISH_HOOK_ON_ERROR is refuse.
const codeHookUnavailable = "hook_unavailable"

// vetWindow is how many of one connection's messages wait on the publish
// hook at once: a connection that sends many gets them checked in
// parallel, stored in order.
const vetWindow = 16

// vet asks the publish hook about m, setting its text to the one to store,
// or returns why it is refused.
func (s *Server) vet(ctx context.Context, room string, m *streams.Message) *refusal {
	text, err := s.cfg.PublishHook.Check(ctx, room, m.User, m.Text, m.ClientID)
	var r Refusal
	switch {
	case errors.As(err, &r):
		code, message := r.Refusal()
		return &refusal{code: code, message: message, clientID: m.ClientID}
	case err != nil:
		s.log.Warn("the publish hook failed; the message is refused", "room", room, "err", err)
		return &refusal{code: codeHookUnavailable, message: "the message was not stored: it could not be checked right now; try again", clientID: m.ClientID}
	case len(text) > s.cfg.MaxMessageBytes:
		return &refusal{code: codeTooLarge, message: "the message as the server rewrote it is " + strconv.Itoa(len(text)) + " bytes; the limit is " + strconv.Itoa(s.cfg.MaxMessageBytes), clientID: m.ClientID}
	}
	m.Text = text
	return nil
}

// vetBatch asks the publish hook about each message of a connection's
// batch, up to vetWindow at once, before any is stored: a refused message
// becomes a refusal in its place, so replies keep the order of sending.
func (s *session) vetBatch(batch []outgoing) {
	if s.srv.cfg.PublishHook == nil {
		return
	}
	// Not the session's context: messages read before a close are still
	// stored (close waits for them); the hook bounds its own wait.
	ctx := context.Background()
	if len(batch) == 1 {
		if batch[0].refusal == nil {
			batch[0].refusal = s.srv.vet(ctx, s.room, &batch[0].m)
		}
		return
	}
	var wg sync.WaitGroup
	slots := make(chan struct{}, vetWindow)
	for i := range batch {
		o := &batch[i]
		if o.refusal != nil {
			continue
		}
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			o.refusal = s.srv.vet(ctx, s.room, &o.m)
			<-slots
		}()
	}
	wg.Wait()
}

// vetPublish is vet for the HTTP API: false when it has answered with the
// refusal (403 with the hook's code, 503 when the hook failed).
func (s *Server) vetPublish(c *fiber.Ctx, room string, m *streams.Message) (bool, error) {
	if s.cfg.PublishHook == nil {
		return true, nil
	}
	r := s.vet(c.UserContext(), room, m)
	switch {
	case r == nil:
		return true, nil
	case r.code == codeHookUnavailable:
		return false, apiError(c, fiber.StatusServiceUnavailable, r.code, r.message)
	case r.code == codeTooLarge:
		return false, apiError(c, fiber.StatusRequestEntityTooLarge, r.code, r.message)
	}
	return false, apiError(c, fiber.StatusForbidden, r.code, r.message)
}

// hooksStatus answers GET /api/hooks[?room=ROOM], behind API_KEY.
func (s *Server) hooksStatus(c *fiber.Ctx) error {
	if ok, err := s.checkAPIKey(c, "hooks_status_disabled", "the hooks status is off: set API_KEY on the server"); !ok {
		return err
	}
	if s.cfg.Hooks == nil {
		return c.JSON(fiber.Map{"enabled": false})
	}
	room := strings.Clone(c.Query("room")) // fasthttp reuses the request's bytes
	if room != "" && !ValidRoom(room) {
		return apiError(c, fiber.StatusBadRequest, "bad_room", "a room name is 1 to 100 characters from A-Z a-z 0-9 . _ -")
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), s.cfg.RedisTimeout)
	defer cancel()
	st, err := s.cfg.Hooks.Status(ctx, room)
	if err != nil {
		return s.unavailable(c, err)
	}
	return c.JSON(st)
}

// checkAPIKey checks Authorization: Bearer <API_KEY>. When it fails it has
// answered: 403 with code and off when no API_KEY is set, else 401.
func (s *Server) checkAPIKey(c *fiber.Ctx, code, off string) (bool, error) {
	if s.cfg.APIKey == "" {
		return false, apiError(c, fiber.StatusForbidden, code, off)
	}
	key, ok := strings.CutPrefix(c.Get(fiber.HeaderAuthorization), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(key), []byte(s.cfg.APIKey)) != 1 {
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="xroom"`)
		return false, apiError(c, fiber.StatusUnauthorized, "unauthorized", "send Authorization: Bearer <API_KEY>")
	}
	return true, nil
}
