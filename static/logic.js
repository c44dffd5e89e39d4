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

/** The hash that names a room, for sharing and reload. */
export function hashForRoom(room) {
  return "#" + new URLSearchParams({ room }).toString();
}

/**
 * The WebSocket URL for a room. loc is window.location (or anything with
 * protocol and host); since and epoch are left out when not known.
 */
export function chatUrl(loc, room, { user, since, epoch } = {}) {
  const scheme = loc.protocol === "https:" ? "wss:" : "ws:";
  const q = new URLSearchParams();
  if (user) q.set("user", user);
  if (since) q.set("since", since);
  if (epoch) q.set("epoch", epoch);
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
