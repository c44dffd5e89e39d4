// Transports of the xroom page: the WebSocket, and Server-Sent Events with
// sends over HTTP for networks where WebSockets cannot connect (see the SSE
// section of docs/protocol.md). Both look like a WebSocket to app.js:
// send(text), close(), readyState, protocol, and onopen / onmessage /
// onclose; the event stream adds oninterrupt, as EventSource reconnects by
// itself (sending Last-Event-ID), and frames go on arriving afterwards.
// The pure helpers are exported for the unit tests (transport.test.js).

export const WEBSOCKET = "websocket";
export const SSE = "sse";

/** WebSockets that never opened, in a page where none ever did, before the page falls back to SSE. */
export const WS_FAILS_BEFORE_SSE = 2;
/** A WebSocket not open after this long counts as failed (a proxy may hold the handshake). */
export const WS_OPEN_TIMEOUT_MS = 10000;

// WebSocket's readyState values, which the event stream takes on too.
const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 3;
// EventSource's CLOSED (it has no CLOSING).
const ES_CLOSED = 2;

// Event types of the stream that carry frames (their data is the frame's
// JSON). "error" also carries EventSource's own connection errors, which
// have no data.
const FRAME_EVENTS = ["message", "ready", "gap", "presence"];

/**
 * Error codes of a send over HTTP that refuse the message for good
 * (resending it would not help), besides those the WebSocket has.
 */
export const SEND_REFUSALS = [
  "bad_user", "bad_room", "bad_origin", "user_mismatch", "room_forbidden",
  "token_required", "token_invalid", "token_expired", "unauthorized", "publish_disabled",
];

/** The transport the page's address asks for: ?transport=sse (or websocket); null when none. */
export function transportFromSearch(search) {
  const t = new URLSearchParams(String(search || "")).get("transport");
  return t === SSE || t === WEBSOCKET ? t : null;
}

/**
 * Whether a page should stop trying WebSockets: the one that just closed
 * never opened, none ever did in this page, and that has happened
 * WS_FAILS_BEFORE_SSE times in a row. (A socket that opened once means the
 * network takes them: a restart is not a reason to change.)
 */
export function shouldFallBack({ kind, opened, everOpened, failedOpens }) {
  return kind === WEBSOCKET && !opened && !everOpened && failedOpens >= WS_FAILS_BEFORE_SSE;
}

/** The event stream URL for a room (same parameters as the WebSocket's). */
export function streamUrl(loc, room, { user, since, epoch, token } = {}) {
  const q = new URLSearchParams();
  if (user) q.set("user", user);
  if (since) q.set("since", since);
  if (epoch) q.set("epoch", epoch);
  if (token) q.set("token", token);
  const qs = q.toString();
  return `${loc.protocol}//${loc.host}/sse/chat/${encodeURIComponent(room)}/${qs ? "?" + qs : ""}`;
}

/** The URL a room's messages are sent to over HTTP. */
export function sendUrl(room) {
  return `/api/rooms/${encodeURIComponent(room)}/messages`;
}

/**
 * The fetch options that send one message frame: with a token, the server
 * takes the user from it; without, the body names the user (the server
 * checks the page's origin).
 */
export function sendRequest(frame, { user, token } = {}) {
  const body = { message: frame.message, client_id: frame.client_id };
  if (!token && user) body.user = user;
  const headers = { Accept: "application/json", "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  return { method: "POST", headers, body: JSON.stringify(body), credentials: "omit" };
}

/**
 * The frame a send's answer stands for, as the WebSocket would have sent
 * it: an ack for 200/201, an error otherwise. status 0 is a send that got
 * no answer (network down). 5xx and no answer are "unavailable" (send it
 * again); a refusal keeps the server's code; 413 of the body is too_large.
 */
export function frameFromSendReply(status, body, clientId) {
  if ((status === 200 || status === 201) && body && typeof body.id === "string") {
    return { type: "ack", client_id: clientId, id: body.id, duplicate: body.duplicate === true };
  }
  const err = body && typeof body.error === "object" && body.error ? body.error : {};
  const message = typeof err.message === "string" ? err.message : `HTTP ${status || "error"}`;
  if (status === 0 || status >= 500 || (status >= 200 && status < 300)) {
    return { type: "error", code: "unavailable", message, client_id: clientId };
  }
  let code = typeof err.code === "string" && err.code ? err.code : "unknown_type";
  if (code === "request_entity_too_large") code = "too_large";
  const f = { type: "error", code, message, client_id: clientId };
  if (Number.isFinite(err.retry_after_ms)) f.retry_after_ms = err.retry_after_ms;
  return f;
}

/**
 * A WebSocket that counts as failed (closes) when it has not opened within
 * WS_OPEN_TIMEOUT_MS.
 */
export function openWebSocket(url, protocol, { WebSocketImpl = globalThis.WebSocket, timeoutMs = WS_OPEN_TIMEOUT_MS } = {}) {
  const ws = new WebSocketImpl(url, protocol);
  const timer = setTimeout(() => {
    if (ws.readyState === CONNECTING) ws.close();
  }, timeoutMs);
  ws.addEventListener("open", () => clearTimeout(timer));
  ws.addEventListener("close", () => clearTimeout(timer));
  return ws;
}

/**
 * The room as an event stream, with sends over HTTP: the WebSocket's
 * interface over EventSource and fetch. send() takes the frames app.js
 * writes: a message is POSTed with its client_id (one at a time, in
 * order), and the answer comes back through onmessage as the ack or error
 * frame the WebSocket would have sent; typing frames are dropped (there
 * is no HTTP way for them).
 */
export class EventStream {
  constructor({ url, room, user, token, EventSourceImpl = globalThis.EventSource, fetchImpl = globalThis.fetch }) {
    this.protocol = "xroom.v1"; // the stream speaks the xroom dialect
    this.readyState = CONNECTING;
    this.onopen = this.onmessage = this.onclose = this.oninterrupt = null;
    this.room = room;
    this.user = user;
    this.token = token;
    this.fetch = (...args) => fetchImpl(...args); // fetch must not be called as another object's method
    this.sending = Promise.resolve(); // the sends in flight, chained
    const es = (this.es = new EventSourceImpl(url));
    es.onopen = () => {
      if (this.readyState === CLOSED) return;
      this.readyState = OPEN;
      this.onopen?.({ type: "open" });
    };
    for (const type of FRAME_EVENTS) es.addEventListener(type, (ev) => this.deliver(ev.data));
    es.addEventListener("error", (ev) => {
      if (this.readyState === CLOSED) return;
      if (typeof ev.data === "string") {
        this.deliver(ev.data); // the server's error frame; the stream ends after it
        return;
      }
      if (es.readyState === ES_CLOSED) {
        // Refused (an HTTP error) or given up: EventSource will not come
        // back by itself. The page reconnects as after a WebSocket's close.
        this.finish(1006, "");
      } else if (this.readyState === OPEN) {
        this.readyState = CONNECTING; // it reconnects by itself, with Last-Event-ID
        this.oninterrupt?.({ type: "interrupt" });
      }
    });
  }

  deliver(data) {
    if (this.readyState !== CLOSED && typeof data === "string") this.onmessage?.({ data });
  }

  send(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (!frame || frame.type !== "message" || this.readyState !== OPEN) return;
    // One send at a time, so that messages are stored in the order they
    // were written, as on a WebSocket (parallel requests could overtake).
    this.sending = this.sending.then(() => this.post(frame));
  }

  async post(frame) {
    let status = 0;
    let body = null;
    try {
      const res = await this.fetch(sendUrl(this.room), sendRequest(frame, this));
      status = res.status;
      body = await res.json().catch(() => null);
    } catch {
      // no answer: status 0, sent again later
    }
    this.deliver(JSON.stringify(frameFromSendReply(status, body, frame.client_id)));
  }

  close(code = 1000, reason = "") {
    this.finish(code, reason);
  }

  finish(code, reason) {
    if (this.readyState === CLOSED) return;
    this.readyState = CLOSED;
    this.es.close();
    // Asynchronous, as a WebSocket's close event is.
    setTimeout(() => this.onclose?.({ code, reason, wasClean: code === 1000 }), 0);
  }
}
