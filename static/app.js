// xroom browser client: a lobby of rooms, and one room at a time to read and
// write. Speaks the xroom.v1 dialect of /ws/chat/{room}/ (see docs/protocol.md).
// All user text goes in with textContent: never innerHTML with data.
// The pure parts (IDs, rules, backoff, outbox, presence) live in logic.js.
import {
  Outbox, activeTypers, applyPresence, backoffDelay, chatUrl, compareIds, formatAgo, formatWhen,
  hashForRoom, idTime, isNewId, isPolicyClose, isValidId, isValidRoom, isValidUser,
  nextId, normalizeUser, olderMessages, olderPageUrl, outboxPrefix, outboxRecord, roomFromLocation,
  savedOutbox, shouldSendTyping,
  sortedMembers, titleFor, tokenFromSearch, tokenSubject, apiHeaders, typingText, utf8Length, TYPING_SHOW_MS,
} from "./logic.js";
import {
  ReadMarker, badgeText, firstUnread, lobbyRooms, readUrl, unreadAfter, unreadByRoom, unreadUrl,
} from "./logic.js";
import {
  EventStream, SEND_REFUSALS, SSE, WEBSOCKET, openWebSocket, shouldFallBack, streamUrl, transportFromSearch,
} from "./transport.js";

const SUBPROTOCOL = "xroom.v1";
const USER_KEY = "xroom.user";
const LOG_LIMIT = 2000; // oldest lines are dropped beyond this (while reading the newest), to bound the DOM
const ROOMS_SHOWN = 30;
const ROOMS_REFRESH_MS = 15000; // the lobby's "last activity" stays fresh without a socket per room
const OLDER_PAGE = 50; // messages per scroll-up page
const OLDER_TRIGGER_PX = 80; // how close to the top of the log before the next older page loads
// Error codes that refuse one frame we sent (the message was not stored).
const REFUSALS = new Set(["bad_json", "bad_utf8", "bad_client_id", "empty", "too_large", "rate_limited", "unknown_type", ...SEND_REFUSALS]);
// How long to wait before resending a message the server could not store.
const RETRY_UNAVAILABLE_MS = 2000;
// Passed on to the WebSocket when the page was opened with ?token=.
const TOKEN = tokenFromSearch(location.search);
// With a token the server takes the name from it (and refuses another one).
const TOKEN_USER = tokenSubject(TOKEN);
// How the page talks to the server (transport.js): WebSocket, unless
// ?transport=sse asks for Server-Sent Events, or WebSockets never open here.
let transport = transportFromSearch(location.search) || WEBSOCKET;
let wsEverOpened = false; // a WebSocket opened in this page: the network takes them

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), countdown: $("countdown"), retry: $("retry"), transport: $("transport"),
  join: $("join"), user: $("user"), userError: $("user-error"),
  room: $("room"), roomError: $("room-error"), leave: $("leave-btn"),
  roomsList: $("rooms-list"), roomsNote: $("rooms-note"), roomsRefresh: $("rooms-refresh"),
  chatTitle: $("chat-title"), older: $("older"), olderNote: $("older-note"),
  log: $("log"), typing: $("typing"), composer: $("composer"), text: $("text"), send: $("send-btn"),
  members: $("members"), membersList: $("members-list"), membersCount: $("members-count"),
};

// The joined room, or null. Everything about one room lives here, so that
// leaving is dropping this object; socket handlers check they still belong.
let session = null;

function newSession(room, user) {
  return {
    room, user,
    lastId: null,     // newest message ID shown: anything <= it is a duplicate
    oldestId: null,   // oldest message ID shown: where the next older page ends
    historyDone: false, // the oldest retained message is shown
    loadingOlder: null, // AbortController of the older page being fetched
    epoch: null,      // from ready; lets the server tell us the history was reset
    conn: null,       // {ws, kind, opened, ready, inflight: [client_id...], typingOff}; ws is a WebSocket or an EventStream
    attempt: 0,       // reconnect attempts since the last ready
    failedOpens: 0,   // consecutive sockets that never opened
    timer: 0, tick: 0, reconnectAt: 0,
    halted: false,    // server said not to come back (policy close)
    outbox: new Outbox(), // own messages not yet seen in the stream; entries carry .el and .status
    // Rows of refused messages, by client_id: should the refusal have been
    // pinned on the wrong send, that message's stream copy removes the row.
    failed: new Map(),
    members: new Set(), // who is here, from presence frames
    membersPartial: false, // the server listed only part of a big room
    typing: new Map(),  // user -> ms of their last typing event
    typingTimer: 0,
    typingSent: 0,      // ms of our last typing frame
    unread: 0,          // messages that arrived while the tab was hidden
  };
}

// ---- status line -------------------------------------------------------

// The status is a live region, announced on change; the reconnect countdown
// ("in 4 s…") lives beside it so that its ticks are not read out.
function setStatus(state, text, countdown = "") {
  ui.status.dataset.state = state;
  if (ui.status.textContent !== text) ui.status.textContent = text;
  ui.countdown.textContent = countdown;
  ui.retry.hidden = !(state === "waiting" || state === "halted");
  ui.members.classList.toggle("stale", Boolean(session) && state !== "connected");
}

// ---- log ---------------------------------------------------------------

function atBottom() {
  const l = ui.log;
  return l.scrollHeight - l.scrollTop - l.clientHeight < 40;
}

function scrollToBottom() {
  ui.log.scrollTop = ui.log.scrollHeight;
}

// Own messages waiting for the stream sit below everything else; stream
// entries and notices go in just above them, which keeps stream order.
function insertAboveOutbox(node) {
  const pinned = atBottom();
  ui.log.insertBefore(node, ui.log.querySelector(":scope > .outbox"));
  if (pinned) {
    trimLog();
    scrollToBottom();
  }
}

// Drops the oldest lines beyond LOG_LIMIT; scrolling up brings them back.
function trimLog() {
  let trimmed = false;
  while (ui.log.childElementCount > LOG_LIMIT && !ui.log.firstElementChild.classList.contains("outbox")) {
    ui.log.firstElementChild.remove();
    trimmed = true;
  }
  if (trimmed && session) {
    const first = ui.log.querySelector(":scope > .msg[data-id]");
    session.oldestId = first ? first.dataset.id : session.lastId;
    session.historyDone = false;
    showOlderState(session);
  }
}

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function notice(text, kind = "info") {
  insertAboveOutbox(el("div", `notice notice-${kind}`, text));
}

function renderMessage({ id, user, message, ts }, own) {
  const row = el("div", own ? "msg own" : "msg");
  if (id) row.dataset.id = id;
  const ms = typeof ts === "number" && Number.isFinite(ts) ? ts : idTime(id || "");
  const time = el("time", "msg-time", formatWhen(ms));
  if (Number.isFinite(ms)) {
    const d = new Date(ms);
    time.dateTime = d.toISOString();
    time.title = d.toLocaleString();
  }
  row.append(time, el("span", "msg-user", String(user ?? "?")), el("div", "msg-text", String(message)));
  return row;
}

// ---- join / leave ------------------------------------------------------

function join(room, user) {
  if (session && session.room === room && session.user === user) {
    // Same room: only come back if we had stopped trying.
    if (!session.conn && !session.timer) reconnectNow();
    return;
  }
  leave(false);
  session = newSession(room, user);
  startReads(session);
  ui.log.replaceChildren();
  ui.chatTitle.textContent = `Messages in ${room}`;
  updateTitle(session);
  showRoom(room);
  ui.text.disabled = ui.send.disabled = false;
  ui.text.placeholder = `Message ${room}`;
  ui.members.hidden = false;
  renderMembers(session);
  renderTyping(session);
  showOlderState(session);
  markCurrentRoom();
  notice(`Joined ${room} as ${user}.`);
  const restored = restoreOutbox(session);
  if (restored) notice(`${restored} message(s) you wrote earlier and not yet sent will be sent.`);
  connect();
}

function leave(byUser = true) {
  const s = session;
  if (!s) return;
  session = null; // first: every handler of s now ignores its events
  stopTimers(s);
  clearTimeout(s.typingTimer);
  s.loadingOlder?.abort();
  if (s.conn) s.conn.ws.close(1000, "left");
  if (byUser) {
    notice(`Left ${s.room}.`);
    if (s.outbox.size) notice(`${s.outbox.size} unsent message(s) were dropped.`, "warn");
    for (const e of s.outbox.entries.values()) {
      e.el.remove();
      forget(s, e.cid);
    }
    // Keep ?token=, drop the room from the address: a reload stays in the lobby.
    const q = new URLSearchParams(location.search);
    q.delete("room");
    history.replaceState(null, "", location.pathname + (q.size ? "?" + q : ""));
  }
  stopReads(s);
  document.title = titleFor(null, 0);
  ui.chatTitle.textContent = "Messages";
  showLobby();
  ui.text.disabled = ui.send.disabled = true;
  ui.text.placeholder = "Join a room to chat";
  ui.members.hidden = true;
  ui.older.hidden = true;
  ui.olderNote.hidden = true;
  ui.typing.textContent = "";
  setStatus("idle", "not connected");
  markCurrentRoom();
}

// ---- connection --------------------------------------------------------

function stopTimers(s) {
  clearTimeout(s.timer);
  clearInterval(s.tick);
  s.timer = s.tick = 0;
}

function connect() {
  const s = session;
  if (!s || s.conn) return;
  stopTimers(s);
  if (!navigator.onLine) {
    setStatus("offline", "offline"); // the online event brings us back
    return;
  }
  s.halted = false;
  setStatus("connecting", "connecting…");
  const kind = transport;
  showTransport(kind);
  const opts = { user: s.user, since: s.lastId, epoch: s.epoch, token: TOKEN };
  let ws;
  try {
    ws = kind === SSE
      ? new EventStream({ url: streamUrl(location, s.room, opts), room: s.room, user: s.user, token: TOKEN })
      : openWebSocket(chatUrl(location, s.room, opts), SUBPROTOCOL);
  } catch (err) {
    notice(`Cannot open a connection: ${err.message}`, "error");
    scheduleReconnect(s);
    return;
  }
  // Typing has no way over HTTP: an event stream does not send it.
  const conn = { ws, kind, opened: false, ready: false, inflight: [], typingOff: kind === SSE };
  s.conn = conn;
  ws.onopen = () => {
    if (session !== s || s.conn !== conn) return;
    conn.opened = true;
    s.failedOpens = 0;
    if (kind === WEBSOCKET) wsEverOpened = true;
    if (ws.protocol !== SUBPROTOCOL) {
      // Without xroom.v1 there is no ready/ack: we could never send safely.
      notice(`The server did not accept the ${SUBPROTOCOL} protocol.`, "error");
      s.halted = true;
      ws.close(1000);
    }
  };
  ws.onmessage = (ev) => {
    if (session !== s || s.conn !== conn) return;
    let f;
    try {
      f = JSON.parse(ev.data);
    } catch {
      return; // not ours to show
    }
    if (f && typeof f === "object") handleFrame(s, conn, f);
  };
  ws.onclose = (ev) => {
    if (session !== s || s.conn !== conn) return;
    handleClose(s, conn, ev);
  };
  ws.oninterrupt = () => {
    if (session !== s || s.conn !== conn) return;
    handleInterrupt(s, conn);
  };
}

// The event stream dropped and EventSource is coming back by itself (with
// Last-Event-ID): as after a close, but the page does not reconnect.
function handleInterrupt(s, conn) {
  conn.ready = false;
  s.outbox.disconnected();
  for (const e of s.outbox.queued()) e.status.textContent = "waiting for the connection…";
  setStatus("connecting", "reconnecting…");
}

// Shows, discreetly, how the page talks to the server.
function showTransport(kind) {
  ui.transport.textContent = kind === SSE ? "SSE" : "WebSocket";
  ui.transport.title = kind === SSE
    ? "Server-Sent Events: messages arrive over plain HTTP and are sent with POST"
    : "WebSocket";
  ui.transport.hidden = false;
}

function handleClose(s, conn, ev) {
  s.conn = null;
  // Anything sent but not acknowledged goes out again after the next ready,
  // unless the replay shows it was stored (then it leaves the outbox).
  s.outbox.disconnected();
  for (const e of s.outbox.queued()) e.status.textContent = "waiting for the connection…";
  if (ev.code === 1009) {
    // Frame over the transport limit: blame the biggest one in flight so
    // that it is not resent on every reconnect.
    const big = s.outbox.take(biggestInflight(s, conn));
    if (big) fail(s, big, "too_large");
  }
  if (!conn.opened) s.failedOpens++;
  if (shouldFallBack({ kind: conn.kind, opened: conn.opened, everOpened: wsEverOpened, failedOpens: s.failedOpens })) {
    // WebSockets never open from here (a proxy that refuses them, say):
    // Server-Sent Events over plain HTTP, from now on in this page.
    transport = SSE;
    s.failedOpens = 0;
    s.attempt = 0;
    notice("WebSockets cannot connect from here: using Server-Sent Events instead.", "info");
  }
  if (!conn.opened && s.failedOpens === 3) {
    notice("Cannot connect. The server may be down, or it refused this room or name.", "warn");
  }
  if (s.halted || isPolicyClose(ev.code)) {
    s.halted = true;
    if (isPolicyClose(ev.code)) {
      notice(`Disconnected by the server (${ev.code}${ev.reason ? ": " + ev.reason : ""}).`, "error");
    }
    setStatus("halted", "disconnected");
    return;
  }
  scheduleReconnect(s);
}

function scheduleReconnect(s) {
  stopTimers(s);
  if (!navigator.onLine) {
    setStatus("offline", "offline");
    return;
  }
  const delay = backoffDelay(s.attempt++);
  s.reconnectAt = Date.now() + delay;
  s.timer = setTimeout(() => {
    s.timer = 0;
    if (session === s) connect();
  }, delay);
  const show = () => {
    const secs = Math.max(1, Math.ceil((s.reconnectAt - Date.now()) / 1000));
    setStatus("waiting", "reconnecting", ` in ${secs} s…`);
  };
  show();
  s.tick = setInterval(show, 1000);
}

function reconnectNow() {
  const s = session;
  if (!s || s.conn) return;
  s.attempt = 0;
  connect();
}

// ---- frames from the server --------------------------------------------

function handleFrame(s, conn, f) {
  switch (f.type) {
    case "message": return onMessage(s, conn, f);
    case "ready": return onReady(s, conn, f);
    case "ack": return onAck(s, conn, f);
    case "gap": return onGap(s, f);
    case "error": return onError(s, conn, f);
    case "presence": return onPresence(s, f);
    case "read": return onRead(s, f);
    default: return; // the server may add frame types
  }
}

function onMessage(s, conn, f) {
  if (!isValidId(f.id) || typeof f.message !== "string") return;
  const mine = s.outbox.take(f.client_id);
  if (mine) dropRow(s, mine); // it is stored: the stream copy replaces it, never resent
  if (f.user === s.user && typeof f.client_id === "string") forget(s, f.client_id); // ours, maybe from another tab
  const refused = s.failed.get(f.client_id);
  if (refused) {
    s.failed.delete(f.client_id);
    refused.remove();
  }
  if (!isNewId(f.id, s.lastId)) return; // already shown
  s.lastId = f.id;
  if (!s.oldestId) s.oldestId = f.id;
  const own = Boolean(mine) || f.user === s.user;
  insertAboveOutbox(renderMessage(f, own));
  if (typeof f.user === "string" && s.typing.delete(f.user)) renderTyping(s);
  // Someone else started this room: list it in the lobby without waiting for the refresh.
  if (conn.ready && !lastRooms.some((r) => r && r.room === s.room)) loadRooms();
  if (conn.ready && !own && document.hidden) {
    s.unread++;
    updateTitle(s);
  }
}

function onReady(s, conn, f) {
  if (isNewId(f.last_id, s.lastId)) s.lastId = f.last_id;
  if (f.epoch !== undefined && f.epoch !== null && f.epoch !== "") s.epoch = String(f.epoch);
  conn.ready = true;
  s.attempt = 0;
  setStatus("connected", "connected");
  // Acknowledged before a drop, yet not in the replay: trimmed meanwhile.
  for (const e of s.outbox.settleUpTo(s.lastId)) settleRow(e);
  for (const e of s.outbox.queued()) transmit(s, e);
  if (!s.oldestId && isValidId(s.lastId) && compareIds(s.lastId, "0-0") > 0) {
    // Nothing replayed (HISTORY_ON_JOIN=0), yet the room has history up to
    // lastId: scrolling up reads it, lastId included.
    s.oldestId = nextId(s.lastId);
  }
  if (!s.oldestId) s.historyDone = true; // an empty room: nothing older either
  showOlderState(s);
  fillLog(s);
  readsReady(s); // the history is in: the divider goes in, marking starts
  loadRooms(); // a room just started shows up in the lobby
}

function onAck(s, conn, f) {
  conn.inflight = conn.inflight.filter((id) => id !== f.client_id);
  const e = s.outbox.acked(f.client_id, f.id);
  if (!e) return;
  forget(s, e.cid); // stored: never to be sent again
  e.el.classList.remove("pending");
  e.status.textContent = "";
  if (!lastRooms.some((r) => r && r.room === s.room)) loadRooms(); // the room's first message: list it
  // Normally its own message frame follows and takes its place in the log;
  // if the page is already past its ID, it will not: it stays where it is.
  if (s.lastId && !isNewId(f.id, s.lastId)) {
    s.outbox.take(e.cid);
    settleRow(e);
  }
}

// forgetHistory clears the log (pending messages stay) and the position in
// the room, so that what follows is shown as the room's whole history.
function forgetHistory(s) {
  s.loadingOlder?.abort();
  for (const e of s.outbox.settleAcked()) e.el.remove();
  for (const node of [...ui.log.children]) if (!node.classList.contains("outbox")) node.remove();
  s.failed.clear();
  s.lastId = s.oldestId = null;
  s.historyDone = false;
}

function onGap(s, f) {
  if (f.reason === "reset") {
    // The history we showed is gone and its IDs mean nothing now: start
    // over with what the room holds (the replay follows this frame).
    forgetHistory(s);
    notice("The room's history was reset; earlier messages are gone.", "warn");
  } else if (f.reason === "rolled_back") {
    // A Redis failover lost messages we showed: they are not in the room
    // any more. Reload the room from Redis (reconnect without since).
    forgetHistory(s);
    notice("A Redis failover lost some recent messages; the room was reloaded.", "warn");
    const conn = s.conn;
    if (conn) {
      handleClose(s, conn, { code: 1000 }); // frames still coming on it are ignored; reconnects
      conn.ws.close(1000, "reload");
    }
  } else {
    notice("Some messages were trimmed away before they reached you and cannot be shown.", "warn");
  }
}

function onError(s, conn, f) {
  const code = typeof f.code === "string" ? f.code : "error";
  const text = typeof f.message === "string" ? f.message : "";
  if (code === "unknown_type" && !f.client_id && conn.typingSent && !conn.typingOff) {
    // A server without typing support refused our typing frame: stop sending it.
    conn.typingOff = true;
    return;
  }
  notice(text ? `${code}: ${text}` : code, "error");
  if (code === "unavailable" && s.outbox.get(f.client_id)) {
    // Storage hiccup: the message was not stored; resend it (same client_id) shortly.
    conn.inflight = conn.inflight.filter((id) => id !== f.client_id);
    const e = s.outbox.retry(f.client_id);
    e.status.textContent = "retrying…";
    setTimeout(() => {
      if (s.outbox.get(e.cid) === e && e.state === "queued") transmit(s, e);
    }, RETRY_UNAVAILABLE_MS);
    return;
  }
  // An error naming a send we wait for refuses it, whatever its code: the
  // server's publish hook may refuse with codes of the application's own.
  if (!REFUSALS.has(code) && !s.outbox.get(f.client_id)) return;
  // Which send was refused: the server's client_id if it gives one; else
  // for too_large the biggest unanswered send, for the rest the oldest.
  const cid = s.outbox.get(f.client_id) ? f.client_id
    : code === "too_large" ? biggestInflight(s, conn) : conn.inflight[0];
  conn.inflight = conn.inflight.filter((id) => id !== cid);
  const e = s.outbox.take(cid);
  if (e) fail(s, e, code);
}

// ---- presence and typing -------------------------------------------------

function onPresence(s, f) {
  if (f.event === "typing") {
    if (typeof f.user === "string" && f.user !== s.user) {
      s.typing.set(f.user, Date.now());
      renderTyping(s);
    }
    return;
  }
  const { members, notice: news, partial } = applyPresence(s.members, f, s.user);
  s.members = members;
  if (partial !== undefined) s.membersPartial = partial;
  if (s.membersPartial) s.members.add(s.user); // a cut list may leave out the one person surely here
  if (f.event === "leave" && typeof f.user === "string" && s.typing.delete(f.user)) renderTyping(s);
  renderMembers(s);
  if (news) notice(news, "presence");
}

function renderMembers(s) {
  const items = sortedMembers(s.members, s.user).map((u) => {
    const li = el("li", u === s.user ? "member self" : "member", u);
    if (u === s.user) li.append(el("span", "hint", " (you)"));
    return li;
  });
  if (s.membersPartial) {
    // The server lists only so many in a big room and sends no join/leave there.
    items.push(el("li", "hint", "…and more. In a room this big the list is not kept up to date."));
  }
  ui.membersList.replaceChildren(...items);
  ui.membersCount.textContent = s.membersPartial ? `(${s.members.size}+)` : `(${s.members.size})`;
}

// Shows who is typing, and clears them TYPING_SHOW_MS after their last event.
function renderTyping(s) {
  clearTimeout(s.typingTimer);
  const now = Date.now();
  const who = activeTypers(s.typing, now);
  const text = typingText(who);
  if (ui.typing.textContent !== text) ui.typing.textContent = text;
  if (who.length) {
    const next = Math.min(...who.map((u) => s.typing.get(u))) + TYPING_SHOW_MS - now;
    s.typingTimer = setTimeout(() => session === s && renderTyping(s), Math.max(50, next));
  }
}

// Tells the room we are typing, at most every TYPING_SEND_MS.
function typed() {
  const s = session;
  const conn = s?.conn;
  if (!conn || !conn.ready || conn.typingOff || conn.ws.readyState !== WebSocket.OPEN) return;
  if (!ui.text.value.trim()) return;
  const now = Date.now();
  if (!shouldSendTyping(s.typingSent, now)) return;
  s.typingSent = conn.typingSent = now;
  conn.ws.send('{"type":"typing"}');
}

// ---- older history -----------------------------------------------------

function showOlderState(s) {
  ui.older.hidden = !s || s.historyDone || !s.oldestId;
  ui.older.disabled = Boolean(s?.loadingOlder);
  ui.older.textContent = s?.loadingOlder ? "Loading older messages…" : "Load older messages";
  ui.olderNote.hidden = !s || !s.historyDone || !s.oldestId;
}

// Fetches the page of history just before the oldest message shown and puts
// it on top, keeping what the person looks at in place.
async function loadOlder(s) {
  if (session !== s || s.loadingOlder || s.historyDone || !s.oldestId) return;
  const ctl = (s.loadingOlder = new AbortController());
  showOlderState(s);
  try {
    const res = await fetch(olderPageUrl(s.room, s.oldestId, OLDER_PAGE), {
      headers: apiHeaders(TOKEN), signal: ctl.signal,
    });
    const body = await res.json().catch(() => null);
    if (!res.ok) throw new Error(body?.error?.message || `HTTP ${res.status}`);
    if (session !== s || s.loadingOlder !== ctl) return;
    const older = olderMessages(body, s.oldestId);
    if (older.length) {
      const fromBottom = ui.log.scrollHeight - ui.log.scrollTop;
      const frag = document.createDocumentFragment();
      for (const m of older) frag.append(renderMessage(m, m.user === s.user));
      ui.log.prepend(frag);
      ui.log.scrollTop = ui.log.scrollHeight - fromBottom; // no jump
      s.oldestId = older[0].id;
    }
    if (!body || body.next === null || body.next === undefined) s.historyDone = true;
  } catch (err) {
    if (err.name === "AbortError") return;
    if (session === s) notice(`Could not load older messages (${err.message}).`, "error");
  } finally {
    if (s.loadingOlder === ctl) s.loadingOlder = null;
    if (session === s) {
      showOlderState(s);
      fillLog(s);
    }
  }
}

// Loads older pages until the log can scroll, so that scrolling up can ask for more.
function fillLog(s) {
  if (session === s && !s.historyDone && ui.log.scrollHeight <= ui.log.clientHeight + OLDER_TRIGGER_PX) {
    loadOlder(s);
  }
}

// ---- own messages ------------------------------------------------------

function queueMessage(text) {
  const s = session;
  if (!s) return;
  const e = s.outbox.add(text);
  keep(s, e);
  showPending(s, e);
  transmit(s, e);
}

// A row at the bottom of the log for an own message not yet in the stream.
function showPending(s, e) {
  e.el = renderMessage({ user: s.user, message: e.text, ts: Date.now() }, true);
  e.el.classList.add("outbox", "pending");
  e.status = el("span", "msg-state", "sending…");
  e.el.append(e.status);
  ui.log.append(e.el);
  scrollToBottom();
}

// ---- unsent messages kept across reloads ---------------------------------
// Each unsent message is kept in localStorage under its client_id until the
// server has it, so closing or reloading the page loses nothing typed; the
// next visit sends it with the same client_id, and dedup stores it once.

function keep(s, e) {
  try {
    localStorage.setItem(outboxPrefix(s.room, s.user) + e.cid, outboxRecord(e.text, Date.now()));
  } catch {
    // storage full or off: the message is still sent from memory
  }
}

function forget(s, cid) {
  try {
    localStorage.removeItem(outboxPrefix(s.room, s.user) + cid);
  } catch {
    // nothing kept
  }
}

// Puts the kept messages of this room and name back in the outbox; returns how many.
function restoreOutbox(s) {
  let saved = [];
  try {
    saved = savedOutbox(localStorage, outboxPrefix(s.room, s.user));
  } catch {
    return 0;
  }
  const back = s.outbox.restore(saved);
  for (const e of back) {
    showPending(s, e);
    e.status.textContent = "waiting for the connection…";
  }
  return back.length;
}

// Sends e now if the socket is ready, else leaves it queued for the next ready.
function transmit(s, e) {
  const conn = s.conn;
  if (!conn || !conn.ready || conn.ws.readyState !== WebSocket.OPEN) {
    e.status.textContent = "waiting for the connection…";
    return;
  }
  conn.ws.send(JSON.stringify({ type: "message", message: e.text, client_id: e.cid }));
  s.outbox.sent(e);
  e.status.textContent = "sending…";
  conn.inflight.push(e.cid);
}

// The client_id of the largest message sent on conn and not yet answered.
function biggestInflight(s, conn) {
  let best, size = -1;
  for (const id of conn.inflight) {
    const e = s.outbox.get(id);
    const n = e ? utf8Length(e.text) : -1;
    if (n > size) [best, size] = [id, n];
  }
  return best;
}

function dropRow(s, e) {
  e.el.remove();
  if (s.conn) s.conn.inflight = s.conn.inflight.filter((id) => id !== e.cid);
}

// Stored, but its stream copy will not come: keep the row where it is.
function settleRow(e) {
  e.el.classList.remove("outbox", "pending");
  e.el.dataset.id = e.ackId;
  e.status.remove();
}

// Refused by the server: freeze the row in the log with a way to try again.
function fail(s, e, code) {
  forget(s, e.cid); // refused: resending would not help; Retry makes a new one
  s.failed.set(e.cid, e.el);
  e.el.classList.remove("outbox", "pending");
  e.el.classList.add("failed");
  e.status.textContent = `not sent (${code}) `;
  const again = el("button", "link", "Retry");
  again.type = "button";
  again.addEventListener("click", () => {
    s.failed.delete(e.cid);
    e.el.remove();
    if (session === s) queueMessage(e.text);
  });
  e.status.append(again);
  e.el.remove();
  insertAboveOutbox(e.el);
}

function sendFromComposer() {
  if (!session) return;
  // Keep inner layout, drop leading blank lines and trailing whitespace.
  const text = ui.text.value.replace(/^(?:[ \t]*\r?\n)+/, "").replace(/\s+$/, "");
  if (!text) return;
  ui.text.value = "";
  queueMessage(text);
  ui.text.focus();
}

// ---- unread count ------------------------------------------------------

function updateTitle(s) {
  document.title = titleFor(s?.room, s?.unread || 0);
}

function visibilityChanged() {
  if (!document.hidden && session) {
    session.unread = 0;
    updateTitle(session);
  }
  if (!document.hidden) loadRooms();
}

// ---- join form ---------------------------------------------------------

function showFieldError(input, errorEl, message) {
  errorEl.textContent = message || "";
  errorEl.hidden = !message;
  if (message) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}

// Validates the form; returns {room, user} or null after showing why not.
function readJoinForm() {
  const user = normalizeUser(ui.user.value);
  const room = ui.room.value.trim();
  const userBad = isValidUser(user) ? "" : "Enter a name of 1 to 32 printable characters.";
  const roomBad = isValidRoom(room)
    ? "" : "Use 1 to 100 letters, digits, dots, dashes or underscores.";
  showFieldError(ui.user, ui.userError, userBad);
  showFieldError(ui.room, ui.roomError, roomBad);
  if (userBad) ui.user.focus();
  else if (roomBad) ui.room.focus();
  return userBad || roomBad ? null : { room, user };
}

function submitJoin() {
  const v = readJoinForm();
  if (!v) return;
  try {
    localStorage.setItem(USER_KEY, v.user);
  } catch {
    // storage may be off (private mode); the name is then just not kept
  }
  join(v.room, v.user);
  const hash = hashForRoom(v.room);
  if (location.hash !== hash) location.hash = hash; // shareable; reload rejoins
  ui.text.focus();
}

// ---- room list (the lobby) ---------------------------------------------

let roomsFetch = null;
let lastRooms = [];

async function loadRooms() {
  roomsFetch?.abort();
  const ctl = (roomsFetch = new AbortController());
  try {
    const res = await fetch("/api/rooms", { headers: apiHeaders(TOKEN), signal: ctl.signal });
    const body = await res.json().catch(() => null);
    if (!res.ok) throw new Error(body?.error?.message || `HTTP ${res.status}`);
    lastRooms = Array.isArray(body?.rooms) ? body.rooms : [];
    renderRooms();
    loadUnread();
  } catch (err) {
    if (err.name === "AbortError") return;
    showRoomsNote(`Could not load rooms (${err.message}).`);
  }
}

function showRoomsNote(text) {
  ui.roomsNote.textContent = text;
  ui.roomsNote.hidden = !text;
}

function renderRooms() {
  const now = Date.now();
  const items = lobbyRooms(lastRooms, unreadRooms, ROOMS_SHOWN)
    .map((r) => {
      const b = el("button", "room-link");
      b.type = "button";
      b.dataset.room = r.room;
      b.append(el("span", "room-name", r.room));
      if (Number.isFinite(r.last_activity)) {
        const ago = el("time", "room-ago", formatAgo(r.last_activity, now));
        ago.dateTime = new Date(r.last_activity).toISOString();
        ago.title = `last message ${new Date(r.last_activity).toLocaleString()}`;
        b.append(ago);
      }
      const li = el("li");
      li.append(b);
      return li;
    });
  ui.roomsList.replaceChildren(...items);
  showRoomsNote(items.length ? "" : "No rooms yet: join one to start it.");
  markCurrentRoom();
  renderBadges();
}

function markCurrentRoom() {
  for (const b of ui.roomsList.querySelectorAll("button[data-room]")) {
    if (session && b.dataset.room === session.room) b.setAttribute("aria-current", "true");
    else b.removeAttribute("aria-current");
  }
}

// ---- the joined room is the page's focus ---------------------------------
// In a room, the join form folds away and the room (its name, Leave, the
// log and the message box) takes the top of the page; on a phone the chat
// fits the screen below the header, so the message box is in view.

const layout = { bar: document.querySelector(".bar"), roomBar: $("room-bar"), roomName: $("room-name") };

function showRoom(room) {
  ui.join.hidden = true;
  layout.roomName.textContent = room;
  layout.roomBar.hidden = false;
  document.body.classList.add("in-room");
  window.scrollTo(0, 0);
}

function showLobby() {
  layout.roomBar.hidden = true;
  ui.join.hidden = false;
  document.body.classList.remove("in-room");
}

// The chat's height leaves room for the sticky header, whose height
// changes when its line wraps (a narrow screen, a long status).
function initLayout() {
  const setBarHeight = () => document.documentElement.style.setProperty("--bar-h", `${layout.bar.offsetHeight}px`);
  setBarHeight();
  new ResizeObserver(setBarHeight).observe(layout.bar);
}

// ---- read positions and unread badges ------------------------------------
// The server keeps how far each person has read in each room (a stream ID).
// The page marks read what has been in view (at most once a second, while
// the tab is visible), puts a "new messages" divider where the unread part
// began when a room opens, and badges the lobby's rooms with their unread
// counts. A read frame (the same person reading on another device) moves
// the position here too: the divider, the title count and the badge clear.

const UNREAD_ROOMS = 100; // rooms asked for in one unread request
const SEEN_RATIO = 0.5; // how much of a message must be in view to count as read
let unreadRooms = new Map(); // room -> {unread, more, lastRead, lastId}, from the server
let unreadFetch = null;
let badgesTimer = 0;
const inView = new Set(); // message rows the IntersectionObserver last saw in the log's view

// Whose unread counts the lobby shows: the joined name, the token's, or the form's.
function readerName() {
  if (session) return session.user;
  if (TOKEN_USER) return TOKEN_USER;
  const u = normalizeUser(ui.user.value);
  return isValidUser(u) ? u : null;
}

// The log's stored messages, in order, as [{id, own}].
function logRows() {
  return [...ui.log.querySelectorAll(":scope > .msg[data-id]")].map((r) => ({ id: r.dataset.id, own: r.classList.contains("own") }));
}

function startReads(s) {
  s.reads = {
    marker: new ReadMarker(),
    from: undefined, // the position when the room opened: undefined until known, null for none
    ready: false,    // the history is in
    placed: false,   // the divider was placed (or found nothing unread)
    divider: null,
    timer: 0,
  };
  fetchReadPosition(s);
}

async function fetchReadPosition(s) {
  let from = null;
  try {
    const res = await fetch(readUrl(s.room, s.user), { headers: apiHeaders(TOKEN) });
    const body = await res.json().catch(() => null);
    const r = res.ok && Array.isArray(body?.reads) ? body.reads[0] : null;
    if (r && isValidId(r.id)) from = r.id;
  } catch {
    // no divider this time; marking goes on
  }
  if (session !== s) return;
  s.reads.from = from;
  s.reads.marker.known(from);
  placeDivider(s);
  markVisible();
}

function readsReady(s) {
  s.reads.ready = true;
  placeDivider(s);
  markVisible();
}

// Once per room opening, when both the history and the position are in:
// the divider goes above the first unread message, scrolled into view.
function placeDivider(s) {
  const r = s.reads;
  if (session !== s || r.placed || !r.ready || r.from === undefined) return;
  r.placed = true;
  const id = firstUnread(logRows(), r.from);
  const row = id && ui.log.querySelector(`:scope > .msg[data-id="${id}"]`);
  if (!row) return;
  r.divider = el("div", "divider", "New messages");
  r.divider.setAttribute("role", "separator");
  r.divider.dataset.first = id;
  ui.log.insertBefore(r.divider, row);
  ui.log.scrollTop = Math.max(0, r.divider.offsetTop - 8);
}

// The part of the log the person can see: inside the window, below the
// sticky header (a phone may have scrolled the page down to the lobby).
function logView() {
  const l = ui.log.getBoundingClientRect();
  const top = Math.max(l.top, layout.bar.getBoundingClientRect().bottom, 0);
  const bottom = Math.min(l.bottom, window.innerHeight);
  return { top, bottom, height: Math.max(0, bottom - top) };
}

// Whether row is in view in the log enough to have been read.
function seenInLog(row, view) {
  const b = row.getBoundingClientRect();
  const shown = Math.min(b.bottom, view.bottom) - Math.max(b.top, view.top);
  return shown > 0 && shown >= Math.min(b.height, view.height) * SEEN_RATIO;
}

// Marks read the newest message in view (held until the room's history
// and position are known, and while the tab is hidden).
function markVisible() {
  const s = session;
  const r = s?.reads;
  if (!r || !r.ready || r.from === undefined || document.hidden) return;
  const view = logView();
  let newest = null;
  for (const row of inView) {
    const id = row.dataset.id;
    if (!isValidId(id) || row.parentNode !== ui.log || !seenInLog(row, view)) continue;
    if (!newest || compareIds(id, newest) > 0) newest = id;
  }
  if (newest) r.marker.seen(newest);
  flushRead(s);
}

function flushRead(s) {
  const r = s.reads;
  if (session !== s || r.timer) return;
  const { id, wait } = r.marker.take(Date.now());
  if (id) sendRead(s, id);
  if (wait) {
    r.timer = setTimeout(() => {
      r.timer = 0;
      flushRead(s);
    }, wait);
  }
  scheduleBadges();
}

// Tells the server: on the socket when it is up, else (no socket, or an
// event stream, which only sends messages) over HTTP.
function sendRead(s, id) {
  const ws = s.conn?.ws;
  if (ws instanceof WebSocket && s.conn.ready && ws.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify({ type: "read", id }));
    return Promise.resolve();
  }
  return fetch(readUrl(s.room, s.user), {
    method: "POST",
    headers: { ...apiHeaders(TOKEN), "Content-Type": "application/json" },
    body: JSON.stringify({ id }),
  }).catch(() => {});
}

// The same person read on another device.
function onRead(s, f) {
  if (!isValidId(f.id) || !s.reads) return;
  s.reads.marker.known(f.id);
  const d = s.reads.divider;
  if (d && compareIds(f.id, d.dataset.first) >= 0) {
    d.remove();
    s.reads.divider = null;
  }
  const left = unreadAfter(logRows(), f.id);
  if (s.unread > left) {
    s.unread = left;
    updateTitle(s);
  }
  scheduleBadges();
}

// Leaving: what was seen and not yet marked goes out now, and the room's
// badge in the lobby starts from what the page knows.
function stopReads(s) {
  const r = s.reads;
  if (!r) return;
  clearTimeout(r.timer);
  const { id } = r.marker.take(Infinity);
  const sent = id ? sendRead(s, id) : Promise.resolve();
  if (r.marker.pos) {
    const u = unreadRooms.get(s.room);
    unreadRooms.set(s.room, { ...u, unread: unreadAfter(logRows(), r.marker.pos), more: false });
  }
  sent.finally(loadUnread);
}

async function loadUnread() {
  unreadFetch?.abort();
  const user = readerName();
  if (!user) return;
  const ctl = (unreadFetch = new AbortController());
  try {
    const res = await fetch(unreadUrl(user, UNREAD_ROOMS), { headers: apiHeaders(TOKEN), signal: ctl.signal });
    const body = await res.json().catch(() => null);
    if (!res.ok) return; // keep the last counts
    unreadRooms = unreadByRoom(body);
  } catch {
    return; // aborted, or offline: keep the last counts
  }
  renderRooms();
}

function scheduleBadges() {
  if (!badgesTimer) badgesTimer = setTimeout(() => {
    badgesTimer = 0;
    renderBadges();
  }, 100);
}

// Each room button's badge: the server's count, or for the joined room
// what the page itself knows (messages after the position, not your own).
function renderBadges() {
  for (const b of ui.roomsList.querySelectorAll("button[data-room]")) {
    const room = b.dataset.room;
    let u = unreadRooms.get(room);
    const pos = session?.room === room ? session.reads?.marker.pos : null;
    if (pos) u = { unread: unreadAfter(logRows(), pos), more: false };
    const text = badgeText(u?.unread, u?.more);
    let badge = b.querySelector(".room-badge");
    if (!text) {
      badge?.remove();
      continue;
    }
    if (!badge) {
      badge = el("span", "room-badge");
      b.append(badge);
    }
    badge.replaceChildren(text, el("span", "visually-hidden", " unread"));
  }
}

function initReads() {
  const seen = new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (e.isIntersecting) inView.add(e.target);
      else inView.delete(e.target);
    }
    markVisible();
  }, { root: ui.log, threshold: [0, SEEN_RATIO, 1] });
  // Every message row the log gets is watched, whoever adds it.
  new MutationObserver((changes) => {
    for (const c of changes) {
      for (const n of c.addedNodes) if (n.classList?.contains("msg")) seen.observe(n);
      for (const n of c.removedNodes) {
        if (n.classList?.contains("msg")) {
          seen.unobserve(n);
          inView.delete(n);
        }
      }
    }
    scheduleBadges();
  }).observe(ui.log, { childList: true });
  document.addEventListener("visibilitychange", markVisible);
  window.addEventListener("scroll", markVisible, { passive: true }); // the log scrolled into the window
  ui.log.addEventListener("scroll", markVisible, { passive: true }); // a row taller than the log crosses no threshold
  ui.user.addEventListener("change", () => !session && loadUnread());
}

// ---- wiring ------------------------------------------------------------

function joinFromLocation() {
  const room = roomFromLocation(location);
  if (room === null || (session && session.room === room)) return;
  ui.room.value = room;
  if (isValidUser(normalizeUser(ui.user.value))) submitJoin();
  else readJoinForm(); // shows what is missing, focuses it
}

function init() {
  try {
    ui.user.value = localStorage.getItem(USER_KEY) || "";
  } catch {
    // no storage: start empty
  }
  if (TOKEN_USER) {
    // The token names the user: show that name, and keep it.
    ui.user.value = TOKEN_USER;
    ui.user.readOnly = true;
    ui.user.title = "the name in your sign-in token";
    $("user-hint").hidden = false;
  }
  initLayout();
  initReads();
  ui.join.addEventListener("submit", (e) => {
    e.preventDefault();
    submitJoin();
  });
  ui.leave.addEventListener("click", () => {
    leave();
    ui.room.focus();
  });
  ui.composer.addEventListener("submit", (e) => {
    e.preventDefault();
    sendFromComposer();
  });
  ui.text.addEventListener("keydown", (e) => {
    // isComposing: Enter that confirms an IME candidate must not send.
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      sendFromComposer();
    }
  });
  ui.text.addEventListener("input", typed);
  ui.log.addEventListener("scroll", () => {
    if (session && ui.log.scrollTop < OLDER_TRIGGER_PX) loadOlder(session);
  }, { passive: true });
  ui.older.addEventListener("click", () => session && loadOlder(session));
  ui.roomsList.addEventListener("click", (e) => {
    const b = e.target.closest("button[data-room]");
    if (!b) return;
    ui.room.value = b.dataset.room;
    submitJoin();
  });
  ui.roomsRefresh.addEventListener("click", loadRooms);
  ui.retry.addEventListener("click", reconnectNow);
  window.addEventListener("hashchange", joinFromLocation);
  document.addEventListener("visibilitychange", visibilityChanged);
  window.addEventListener("online", () => {
    if (session && !session.halted) reconnectNow();
  });
  window.addEventListener("offline", () => {
    const s = session;
    if (!s || s.halted) return;
    const conn = s.conn;
    if (conn) {
      // The socket may linger for a minute before it notices the network is
      // gone: drop it now, so that what is typed waits in the outbox and the
      // page says it is offline. The online event reconnects.
      conn.ws.close(1000, "offline");
      handleClose(s, conn, { code: 1006 });
    } else {
      stopTimers(s);
      setStatus("offline", "offline");
    }
  });
  setInterval(() => {
    if (!document.hidden) loadRooms();
  }, ROOMS_REFRESH_MS);

  loadRooms();
  if (roomFromLocation(location) !== null) joinFromLocation();
  else (ui.user.value ? ui.room : ui.user).focus();
}

init();
