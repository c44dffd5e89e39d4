package streams

// Every key xroom writes, in one place. Tests, and bench (which keeps a
// documented copy, being outside), name keys through these.

// Keys names the Redis keys of one deployment. Every key of a room carries
// the room in braces, a Redis Cluster hash tag, so a room lives in one slot.
type Keys struct{ Prefix string }

// Messages is the room's stream: one entry per chat message.
func (k Keys) Messages(room string) string { return k.Prefix + ":{" + room + "}:messages" }

// Epoch names the current incarnation of the room's history.
func (k Keys) Epoch(room string) string { return k.Prefix + ":{" + room + "}:epoch" }

// Dedup remembers the ID a user's client_id was stored under. A client_id
// cannot contain ':' (see ValidClientID), so the key reads back unambiguously.
func (k Keys) Dedup(room, user, clientID string) string {
	return k.Prefix + ":{" + room + "}:dedup:" + user + ":" + clientID
}

// Rooms is the sorted set of rooms scored by their last activity (ms).
func (k Keys) Rooms() string { return k.Prefix + ":rooms" }

// Presence is the sorted set of a room's live connections: member
// "USER:CONNID", score = expiry time in ms.
func (k Keys) Presence(room string) string { return k.Prefix + ":{" + room + "}:presence" }

// PresenceUsers is a hash USER -> number of that user's live connections in
// the room, kept with the presence set by the same scripts, so that telling
// a user's first connection (join) and last one (leave) costs O(log N), not
// a scan of the room.
func (k Keys) PresenceUsers(room string) string { return k.Prefix + ":{" + room + "}:presence:users" }

// Events is the room's stream of short-lived presence events (join, leave, typing).
func (k Keys) Events(room string) string { return k.Prefix + ":{" + room + "}:events" }

// Reads is the hash of the room's read positions: field = user, value = the
// stream ID of the newest entry the user has read.
func (k Keys) Reads(room string) string { return k.Prefix + ":{" + room + "}:reads" }

// UserRooms is the sorted set of the rooms a user has a read position in or
// has written to, scored by when that last happened (ms). It answers "which
// rooms may have unread messages for this user" without a scan. The user
// is the hash tag: one user's index lives in one slot.
func (k Keys) UserRooms(user string) string { return k.Prefix + ":user:{" + user + "}:rooms" }

// Dead is the room's dead-letter stream: messages the webhook did not take
// after every attempt, with the last status and error.
func (k Keys) Dead(room string) string { return k.Prefix + ":{" + room + "}:hooks:dead" }

// HooksSince holds when webhooks were first turned on (Unix ms, Redis's
// clock): a room's group, made when the room is first seen, starts there.
func (k Keys) HooksSince() string { return k.Prefix + ":hooks:since" }
