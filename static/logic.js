// Pure helpers of the xroom browser client: no DOM, no network, so they can
// be unit-tested under node (see logic.test.js) and reused by a later client.

const ID_RE = /^(\d+)(?:-(\d+))?$/;

/** Reports whether s is a Redis stream ID ("ms-seq", or just "ms"). */
export function isValidId(s) {
  return typeof s === "string" && ID_RE.test(s);
}

// Compares two non-negative decimal strings of any length as numbers.
// Stream IDs are 64-bit parts, beyond what a float holds exactly.
function compareDigits(a, b) {
  a = a.replace(/^0+(?=\d)/, "");
  b = b.replace(/^0+(?=\d)/, "");
  if (a.length !== b.length) return a.length < b.length ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Compares stream IDs by (ms, seq): -1, 0 or 1. Never compare IDs as plain
 * strings: "999-0" < "1000-0" numerically but not lexically.
 */
export function compareIds(a, b) {
  const ma = ID_RE.exec(a);
  const mb = ID_RE.exec(b);
  if (!ma || !mb) throw new TypeError(`not a stream ID: ${ma ? b : a}`);
  return compareDigits(ma[1], mb[1]) || compareDigits(ma[2] || "0", mb[2] || "0");
}

/**
 * The smallest stream ID after id: "5-3" gives "5-4". As a `before` bound it
 * takes in id itself (before is strictly older).
 */
export function nextId(id) {
  const m = ID_RE.exec(id);
  if (!m) throw new TypeError(`not a stream ID: ${id}`);
  return `${m[1]}-${BigInt(m[2] || "0") + 1n}`;
}

/** The milliseconds part of a stream ID, as a number. */
export function idTime(id) {
  const m = ID_RE.exec(id);
  return m ? Number(m[1]) : NaN;
}

const ROOM_RE = /^[A-Za-z0-9._-]{1,100}$/;

/** The server's room rule: 1 to 100 characters of A-Z a-z 0-9 . _ - */
export function isValidRoom(room) {
  return typeof room === "string" && ROOM_RE.test(room);
}

// Printable as Go's unicode.IsPrint sees it: letters, marks, numbers,
// punctuation, symbols and the ASCII space; counted in code points (runes).
const USER_RE = /^[\p{L}\p{M}\p{N}\p{P}\p{S} ]{1,32}$/u;

/** Trims a typed display name; the result is what gets validated and sent. */
export function normalizeUser(name) {
  return typeof name === "string" ? name.trim() : "";
}

/** The server's user rule: 1 to 32 printable characters. */
export function isValidUser(name) {
  return typeof name === "string" && USER_RE.test(name);
}

/** Reads the room from a location hash such as "#room=lobby" (or null). */
export function roomFromHash(hash) {
  const params = new URLSearchParams(String(hash || "").replace(/^#/, ""));
  const room = params.get("room");
  return room === null ? null : room;
}

/**
 * The room a page address names: "#room=NAME" (what the page writes), or
 * "?room=NAME" (handy for links made by hand); null when neither is there.
 */
export function roomFromLocation(loc) {
  const fromHash = roomFromHash(loc.hash);
  if (fromHash !== null) return fromHash;
  return new URLSearchParams(String(loc.search || "")).get("room");
}

/** The token= of the page's query, passed on to the WebSocket (or null). */
export function tokenFromSearch(search) {
  const t = new URLSearchParams(String(search || "")).get("token");
  return t ? t : null;
}

/**
 * The user a token names (its `sub` claim), read without checking the
 * signature: the server checks it, the page only needs the name to show.
 * null when the token is not a readable JWT.
 */
export function tokenSubject(token) {
  try {
    const part = String(token || "").split(".")[1];
    if (!part) return null;
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const sub = JSON.parse(new TextDecoder().decode(bytes)).sub;
    return typeof sub === "string" && sub !== "" ? sub : null;
  } catch {
    return null;
  }
}

/** Request headers for the HTTP API: JSON, and the token when there is one. */
export function apiHeaders(token) {
  const h = { Accept: "application/json" };
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

/** The hash that names a room, for sharing and reload. */
export function hashForRoom(room) {
  return "#" + new URLSearchParams({ room }).toString();
}

/**
 * The WebSocket URL for a room. loc is window.location (or anything with
 * protocol and host); since, epoch and token are left out when not known.
 */
export function chatUrl(loc, room, { user, since, epoch, token } = {}) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  const q = new URLSearchParams();
  if (user) q.set("user", user);
  if (since) q.set("since", since);
  if (epoch) q.set("epoch", epoch);
  if (token) q.set("token", token);
  const qs = q.toString();
  return `${scheme}//${loc.host}/ws/chat/${encodeURIComponent(room)}/${qs ? "?" + qs : ""}`;
}

export const BACKOFF_BASE_MS = 500;
export const BACKOFF_MAX_MS = 15000;
export const BACKOFF_JITTER = 0.3;

/**
 * Delay before reconnect attempt number `attempt` (0 for the first):
 * 0.5 s doubling up to 15 s, then ±30% jitter so that clients dropped
 * together by a restart do not all come back in the same instant.
 */
export function backoffDelay(attempt, random = Math.random) {
  const n = Math.max(0, Math.min(attempt | 0, 30));
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** n);
  return Math.round(base * (1 + (random() * 2 - 1) * BACKOFF_JITTER));
}

/** A fresh client_id for one outgoing message. */
export function newClientId(c = globalThis.crypto) {
  if (c && typeof c.randomUUID === "function") return "c-" + c.randomUUID();
  if (c && typeof c.getRandomValues === "function") {
    const b = c.getRandomValues(new Uint8Array(16));
    return "c-" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }
  return "c-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
}

/** Local wall-clock time of ms as HH:MM (24 h). */
export function formatHHMM(ms) {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return "--:--";
  return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/**
 * When a message was written, as short as is clear: "14:05" today,
 * "20 Nov 14:05" earlier this year, "20 Nov 2025 14:05" before that.
 */
export function formatWhen(ms, now = Date.now()) {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return "--:--";
  const today = new Date(now);
  const hm = formatHHMM(ms);
  if (d.toDateString() === today.toDateString()) return hm;
  const day = `${d.getDate()} ${MONTHS[d.getMonth()]}`;
  return d.getFullYear() === today.getFullYear() ? `${day} ${hm}` : `${day} ${d.getFullYear()} ${hm}`;
}

/** Size of s in UTF-8 bytes, the unit of the server's message limit. */
export function utf8Length(s) {
  return new TextEncoder().encode(s).length;
}

/**
 * Whether a close code means "do not come back by yourself": 1008 (policy
 * violation) and the application range 4000-4999.
 */
export function isPolicyClose(code) {
  return code === 1008 || (code >= 4000 && code <= 4999);
}

/** The HTTP path of one older page of a room's history (newest first). */
export function olderPageUrl(room, before, limit) {
  const q = new URLSearchParams({ before, limit: String(limit) });
  return `/api/rooms/${encodeURIComponent(room)}/messages?${q}`;
}

/**
 * The messages of an older page (the API gives them newest first) that go
 * above the oldest one shown: oldest first, only valid ones strictly older
 * than oldestId, each ID once.
 */
export function olderMessages(page, oldestId) {
  const list = Array.isArray(page?.messages) ? page.messages : [];
  const seen = new Set();
  const out = [];
  for (const m of list) {
    if (!m || !isValidId(m.id) || typeof m.message !== "string" || seen.has(m.id)) continue;
    if (oldestId && compareIds(m.id, oldestId) >= 0) continue;
    seen.add(m.id);
    out.push(m);
  }
  return out.sort((a, b) => compareIds(a.id, b.id));
}

/** "just now", "5 min ago", "3 h ago", "2 d ago": how long ago ms was. */
export function formatAgo(ms, now = Date.now()) {
  if (!Number.isFinite(ms)) return "";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** The page title: the room, with the unread count while the tab is hidden. */
export function titleFor(room, unread) {
  const base = room ? `${room} · xroom` : "xroom";
  return unread > 0 ? `(${unread > 99 ? "99+" : unread}) ${base}` : base;
}

// ---- presence and typing ----------------------------------------------

/** Clients send {"type":"typing"} at most this often while the person types. */
export const TYPING_SEND_MS = 3000;
/** "X is typing…" stays this long after X's last typing event. */
export const TYPING_SHOW_MS = 5000;

/** Whether to send a typing frame now, the last one having gone at lastSent (ms, 0 for never). */
export function shouldSendTyping(lastSent, now) {
  return !lastSent || now - lastSent >= TYPING_SEND_MS;
}

/**
 * Applies one presence frame to the member set (a Set of user names) and
 * returns the new set (never the same object), what to tell the person, and
 * for a snapshot whether it is partial (a room too big for the server to
 * list whole and keep live): {members, notice, partial}; partial is
 * undefined when the frame says nothing about it. self is this page's user,
 * whose own join is not news. A join of a listed user or a leave of an
 * unlisted one (events racing the snapshot) is a no-op. Unknown or
 * malformed frames change nothing.
 */
export function applyPresence(members, f, self) {
  const next = new Set(members);
  let notice = null;
  if (!f || typeof f !== "object") return { members: next, notice, partial: undefined };
  if (f.event === "snapshot" && Array.isArray(f.members)) {
    next.clear();
    for (const m of f.members) if (m && typeof m.user === "string") next.add(m.user);
    return { members: next, notice, partial: f.partial === true };
  } else if (f.event === "join" && typeof f.user === "string") {
    if (!next.has(f.user) && f.user !== self) notice = `${f.user} joined`;
    next.add(f.user);
  } else if (f.event === "leave" && typeof f.user === "string") {
    if (next.has(f.user) && f.user !== self) notice = `${f.user} left`;
    next.delete(f.user);
  }
  return { members: next, notice, partial: undefined };
}

/** Members in display order: yourself first, then by name. */
export function sortedMembers(members, self) {
  return [...members].sort((a, b) => (a === self ? -1 : b === self ? 1 : a < b ? -1 : a > b ? 1 : 0));
}

/** "bob is typing…", "bob and eve are typing…", "4 people are typing…", or "". */
export function typingText(users) {
  const u = [...users].sort();
  if (u.length === 0) return "";
  if (u.length === 1) return `${u[0]} is typing…`;
  if (u.length === 2) return `${u[0]} and ${u[1]} are typing…`;
  if (u.length === 3) return `${u[0]}, ${u[1]} and ${u[2]} are typing…`;
  return `${u.length} people are typing…`;
}

/**
 * Who is typing at now: the users of typing (a Map user -> ms of their last
 * typing event) seen within TYPING_SHOW_MS. Drops the stale ones from the map.
 */
export function activeTypers(typing, now) {
  const out = [];
  for (const [user, at] of typing) {
    if (now - at < TYPING_SHOW_MS) out.push(user);
    else typing.delete(user);
  }
  return out;
}

// ---- own messages: queue, pending and reconciliation ------------------

// The server's client_id rule.
const CLIENT_ID_RE = /^[A-Za-z0-9._-]{1,64}$/;

/**
 * The prefix of the localStorage keys of one person's unsent messages in one
 * room: one key per message (prefix + client_id -> {text, at}), so that two
 * tabs add and remove their own without overwriting each other's.
 */
export function outboxPrefix(room, user) {
  return "xroom.outbox." + JSON.stringify([room, user]) + ".";
}

/** The value stored under outboxPrefix() + client_id. */
export function outboxRecord(text, at) {
  return JSON.stringify({ text, at });
}

/**
 * The unsent messages kept in storage (a Storage: length, key(i),
 * getItem) under prefix, oldest first, as [{cid, text}]. Unreadable records
 * are left out.
 */
export function savedOutbox(storage, prefix) {
  const out = [];
  for (let i = 0; i < storage.length; i++) {
    const key = storage.key(i);
    if (typeof key !== "string" || !key.startsWith(prefix)) continue;
    let rec;
    try {
      rec = JSON.parse(storage.getItem(key));
    } catch {
      continue;
    }
    if (!rec || typeof rec.text !== "string") continue;
    out.push({ cid: key.slice(prefix.length), text: rec.text, at: Number(rec.at) || 0 });
  }
  return out.sort((a, b) => a.at - b.at).map(({ cid, text }) => ({ cid, text }));
}

/**
 * Outbox keeps the messages this page sent and has not yet seen in the
 * stream, by client_id, in send order. An entry is queued (waits for a
 * ready socket), sent (on the wire, not answered) or acked (stored under
 * ackId; its stream copy normally follows). Callers may hang their own
 * fields (a DOM row) on entries.
 *
 * The rules that keep each message stored once and shown once:
 * - a message is resent only with its first client_id, so the server's dedup
 *   stores it once however often it goes out;
 * - its stream copy (same client_id) replaces it: it is then never resent;
 * - a drop turns sent into queued (resent after the next ready), acked stays
 *   acked (stored: never resent);
 * - an acked entry whose ID the page has already passed will get no stream
 *   copy on this page: it settles where it is.
 */
export class Outbox {
  constructor(newId = newClientId) {
    this.newId = newId;
    this.entries = new Map();
  }

  get size() {
    return this.entries.size;
  }

  get(cid) {
    return typeof cid === "string" ? this.entries.get(cid) : undefined;
  }

  /** A new queued entry for text. */
  add(text) {
    const e = { cid: this.newId(), text, state: "queued", ackId: null };
    this.entries.set(e.cid, e);
    return e;
  }

  /** Entries waiting for a socket, in send order. */
  queued() {
    return [...this.entries.values()].filter((e) => e.state === "queued");
  }

  /** The entry went out on the wire. */
  sent(e) {
    e.state = "sent";
  }

  /** The connection dropped: what was sent but not acked goes out again. */
  disconnected() {
    for (const e of this.entries.values()) if (e.state === "sent") e.state = "queued";
  }

  /** The server stored cid as id. Returns the entry, or undefined. */
  acked(cid, id) {
    const e = this.get(cid);
    if (!e || !isValidId(id)) return undefined;
    e.state = "acked";
    e.ackId = id;
    return e;
  }

  /** The server could not store it for now (unavailable): send it again. */
  retry(cid) {
    const e = this.get(cid);
    if (e) e.state = "queued";
    return e;
  }

  /** Removes and returns the entry (its stream copy arrived, or it was refused). */
  take(cid) {
    const e = this.get(cid);
    if (e) this.entries.delete(cid);
    return e;
  }

  /**
   * Removes and returns the acked entries whose ID is at or before lastId:
   * the page has passed them, so their stream copy will not come.
   */
  settleUpTo(lastId) {
    const out = [];
    if (!lastId) return out;
    for (const e of [...this.entries.values()]) {
      if (e.state === "acked" && compareIds(e.ackId, lastId) <= 0) {
        this.entries.delete(e.cid);
        out.push(e);
      }
    }
    return out;
  }

  /**
   * Puts back what savedOutbox() read (after a reload, or from another tab
   * of the same person): queued, with their first client_id, so that the server's dedup
   * stores each once however many times they go out. Returns the new entries.
   */
  restore(list) {
    const added = [];
    if (!Array.isArray(list)) return added;
    for (const item of list) {
      if (!item || !CLIENT_ID_RE.test(item.cid) || typeof item.text !== "string" || !item.text) continue;
      if (this.entries.has(item.cid)) continue;
      const e = { cid: item.cid, text: item.text, state: "queued", ackId: null };
      this.entries.set(e.cid, e);
      added.push(e);
    }
    return added;
  }

  /** Removes and returns every acked entry (the history was reset: their IDs mean nothing now). */
  settleAcked() {
    const out = [...this.entries.values()].filter((e) => e.state === "acked");
    for (const e of out) this.entries.delete(e.cid);
    return out;
  }
}

/**
 * Whether a message frame with id is new on a page that has shown up to
 * lastId (null: nothing yet). Stream order makes this the whole dedup.
 */
export function isNewId(id, lastId) {
  return isValidId(id) && (!lastId || compareIds(id, lastId) > 0);
}

// ---- read positions and unread badges ---------------------------------

/** The most often the page marks a room read: at most once a second. */
export const READ_MARK_MS = 1000;

/** The HTTP path of a user's unread counts (GET /api/users/{user}/unread). */
export function unreadUrl(user, limit) {
  return `/api/users/${encodeURIComponent(user)}/unread?limit=${limit}`;
}

/** The HTTP path of one user's read position in a room (GET), or of marking it (POST). */
export function readUrl(room, user) {
  return `/api/rooms/${encodeURIComponent(room)}/read?${new URLSearchParams({ user })}`;
}

/**
 * The unread answer as a Map room -> {unread, more, lastRead, lastId};
 * malformed entries are left out.
 */
export function unreadByRoom(body) {
  const out = new Map();
  const list = Array.isArray(body?.rooms) ? body.rooms : [];
  for (const r of list) {
    if (!r || !isValidRoom(r.room) || !Number.isInteger(r.unread) || r.unread < 0) continue;
    if (!isValidId(r.last_id) || !isValidId(r.last_read)) continue;
    out.set(r.room, { unread: r.unread, more: r.more === true, lastRead: r.last_read, lastId: r.last_id });
  }
  return out;
}

/** What a room's badge says: "" for none, "3", or "100+" past the server's cap. */
export function badgeText(unread, more) {
  if (!Number.isFinite(unread) || unread <= 0) return "";
  return more ? `${unread}+` : String(unread);
}

/**
 * The rooms the lobby shows: the server's list (most recent first) and the
 * rooms with unread messages it left out, by last activity, at most limit,
 * rooms with unread messages first to be kept. rooms is GET /api/rooms's
 * list, unread a Map from unreadByRoom.
 */
export function lobbyRooms(rooms, unread, limit) {
  const list = (Array.isArray(rooms) ? rooms : []).filter((r) => r && isValidRoom(r.room));
  const listed = new Set(list.map((r) => r.room));
  for (const [room, u] of unread || []) {
    if (u.unread > 0 && !listed.has(room)) {
      list.push({ room, last_id: u.lastId, last_activity: idTime(u.lastId) });
      listed.add(room);
    }
  }
  const at = (r) => (Number.isFinite(r.last_activity) ? r.last_activity : -Infinity);
  const byActivity = (a, b) => at(b) - at(a);
  const keep = [...list].sort((a, b) => {
    const ua = (unread?.get(a.room)?.unread || 0) > 0, ub = (unread?.get(b.room)?.unread || 0) > 0;
    return ua === ub ? byActivity(a, b) : ua ? -1 : 1;
  }).slice(0, limit);
  const kept = new Set(keep.map((r) => r.room));
  return list.filter((r) => kept.has(r.room)).sort(byActivity);
}

/**
 * Where the "new messages" divider goes when a room opens: the ID of the
 * first message after the read position lastRead that is not the person's
 * own (rows: [{id, own}] in log order), or null (nothing unread, or no
 * position: a room never read has no divider).
 */
export function firstUnread(rows, lastRead) {
  if (!isValidId(lastRead)) return null;
  for (const r of rows) {
    if (r && !r.own && isValidId(r.id) && compareIds(r.id, lastRead) > 0) return r.id;
  }
  return null;
}

/** How many rows ([{id, own}]) after the read position pos are others' (unread). */
export function unreadAfter(rows, pos) {
  let n = 0;
  for (const r of rows) {
    if (r && !r.own && isValidId(r.id) && (!isValidId(pos) || compareIds(r.id, pos) > 0)) n++;
  }
  return n;
}

/**
 * ReadMarker decides when the page tells the server how far the person has
 * read: the newest message seen, at most once per READ_MARK_MS, never an
 * ID at or before the position already known (from the server, another
 * device, or an earlier mark).
 */
export class ReadMarker {
  constructor(every = READ_MARK_MS) {
    this.every = every;
    this.pos = null;      // the position as far as the page knows
    this.pending = null;  // the newest ID seen and not yet marked
    this.sentAt = -Infinity;
  }

  /** The position is at least id (the server said so). */
  known(id) {
    if (isValidId(id) && (!this.pos || compareIds(id, this.pos) > 0)) this.pos = id;
  }

  /** The person has seen the message id. */
  seen(id) {
    if (!isValidId(id) || (this.pos && compareIds(id, this.pos) <= 0)) return;
    if (!this.pending || compareIds(id, this.pending) > 0) this.pending = id;
  }

  /**
   * What to do at now (ms): {id} to mark now, {wait} ms to come back after,
   * or {} when nothing is to be marked.
   */
  take(now) {
    if (!this.pending || (this.pos && compareIds(this.pending, this.pos) <= 0)) {
      this.pending = null;
      return {};
    }
    const wait = this.sentAt + this.every - now;
    if (wait > 0) return { wait };
    const id = this.pending;
    this.pending = null;
    this.pos = id;
    this.sentAt = now;
    return { id };
  }
}
