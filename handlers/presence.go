package handlers

import (
	"context"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/xroom/xroom/streams"
)

// typingEvery is the most often one connection's {"type":"typing"} is
// passed on; extra ones are dropped silently (clients send one every 3 s
// while the person types, so this only stops floods).
const typingEvery = 2 * time.Second

// eventsPerPass is how many presence events one write pass takes from the
// room's buffer at a time.
const eventsPerPass = 32

// typingFrame is what decodeFrame returns for {"type":"typing"}: not a
// refusal, and never answered.
var typingFrame = &refusal{code: "typing"}

type memberJSON struct {
	User string `json:"user"`
}

// presenceFrame is a live presence event: join, leave or typing.
type presenceFrame struct {
	Type  string `json:"type"`
	Room  string `json:"room"`
	Event string `json:"event"`
	User  string `json:"user"`
}

// snapshotFrame lists who is in the room, sent once right after ready.
// Partial marks a room too big to list whole (PRESENCE_MAX_MEMBERS).
type snapshotFrame struct {
	Type    string       `json:"type"`
	Room    string       `json:"room"`
	Event   string       `json:"event"`
	Members []memberJSON `json:"members"`
	Partial bool         `json:"partial,omitempty"`
}

// EncodeEvent is the streams.EventEncoder of presence frames: the hub calls
// it once per event and every xroom.v1 connection sends the result.
func EncodeEvent(room string, ev *streams.Event) []byte {
	if ev.Type == streams.EventRead {
		return encodeRead(room, ev) // reads.go
	}
	return encode(presenceFrame{Type: "presence", Room: room, Event: ev.Type, User: ev.User})
}

func membersJSON(users []string) []memberJSON {
	out := make([]memberJSON, len(users))
	for i, u := range users {
		out[i] = memberJSON{User: u}
	}
	return out
}

// joinPresence makes the connection present in its room. A Redis failure
// does not stop the session: the next heartbeat adds it.
func (f *feed) joinPresence() {
	ctx, cancel := context.WithTimeout(f.ctx, f.srv.cfg.RedisTimeout)
	defer cancel()
	member, err := f.srv.presence.Join(ctx, f.room, f.user)
	f.member = member
	if err != nil {
		f.log.Warn("presence join failed; the next heartbeat retries", "err", err)
	}
}

// leavePresence removes the connection; if Redis fails, it expires after the TTL.
func (f *feed) leavePresence() {
	if f.member == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.srv.cfg.RedisTimeout)
	defer cancel()
	if err := f.srv.presence.Leave(ctx, f.room, f.member); err != nil {
		f.log.Warn("presence leave failed; the member expires after the TTL", "err", err)
	}
}

// snapshot is the frame listing who is in the room, or nil for the
// compatible dialect. Without Redis it is nil too: messaging goes on, and
// join and leave events follow once Redis is back.
func (f *feed) snapshot() []byte {
	if f.compat {
		return nil
	}
	ctx, cancel := context.WithTimeout(f.ctx, f.srv.cfg.RedisTimeout)
	users, partial, err := f.srv.presence.Members(ctx, f.room)
	cancel()
	if err != nil {
		f.log.Warn("presence snapshot failed", "err", err)
		return nil
	}
	return encode(snapshotFrame{Type: "presence", Room: f.room, Event: "snapshot", Members: membersJSON(users), Partial: partial})
}

// writeEvents writes the presence and read events that arrived since the
// last pass and are for this connection (see forMe). Only the xroom
// dialect gets them.
func (f *feed) writeEvents() error {
	if f.compat {
		return nil
	}
	var local [eventsPerPass]*streams.Event
	for {
		evs, seq := f.sub.Events(f.evSeq, local[:0])
		f.evSeq = seq
		for _, ev := range evs {
			if ev.Frame == nil || !f.forMe(ev) {
				continue
			}
			if err := f.sink.event(kindPresence, ev.Frame); err != nil {
				return err
			}
		}
		if len(evs) < eventsPerPass {
			return nil
		}
	}
}

// forMe tells whether an event is for this connection: not the user's own
// typing; a read event only on the same user's other connections.
func (f *feed) forMe(ev *streams.Event) bool {
	switch ev.Type {
	case streams.EventTyping:
		return ev.User != f.user
	case streams.EventRead:
		return ev.User == f.user && (f.readConn == "" || ev.Conn != f.readConn)
	}
	return true
}

// typing passes on {"type":"typing"}, at most once per typingEvery; never
// answered, and a Redis failure is only logged (typing is ephemeral).
func (s *session) typing() {
	now := time.Now().UnixNano()
	if s.lastTyping != 0 && now-s.lastTyping < int64(typingEvery) {
		return
	}
	s.lastTyping = now
	ctx, cancel := context.WithTimeout(s.ctx, s.srv.cfg.RedisTimeout)
	defer cancel()
	if err := s.srv.presence.Typing(ctx, s.room, s.user); err != nil {
		s.log.Debug("typing event not stored", "err", err)
	}
}

// Presence returns the server's presence keeper.
func (s *Server) Presence() *streams.Presence { return s.presence }

// presenceAPI answers GET /api/rooms/{room}/presence.
func (s *Server) presenceAPI(c *fiber.Ctx) error {
	room := c.Params("room")
	ctx, cancel := context.WithTimeout(c.UserContext(), s.cfg.RedisTimeout)
	defer cancel()
	users, partial, err := s.presence.Members(ctx, room)
	if err != nil {
		return s.unavailable(c, err)
	}
	body := fiber.Map{"room": room, "members": membersJSON(users)}
	if partial {
		body["partial"] = true
	}
	return c.JSON(body)
}

// closePresence stops the heartbeat and removes what is left of this
// instance's connections, after the sessions ended (each left on its own).
func (s *Server) closePresence(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RedisTimeout)
	defer cancel()
	if err := s.presence.Close(ctx); err != nil {
		s.log.Warn("presence cleanup failed; the members expire after the TTL", "err", err)
	}
}
