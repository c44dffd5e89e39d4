// xroom browser client: join a room, read it, write to it. Speaks the
// xroom.v1 dialect of /ws/chat/{room}/ (see PROTOCOL.md). All user text is
// put in with textContent: never innerHTML with data.
import {
  backoffDelay, chatUrl, compareIds, formatHHMM, hashForRoom, idTime,
  isPolicyClose, isValidId, isValidRoom, isValidUser, newClientId,
  normalizeUser, roomFromHash, utf8Length,
} from "./logic.js";

const SUBPROTOCOL = "xroom.v1";
const USER_KEY = "xroom.user";
const LOG_LIMIT = 2000; // oldest lines are dropped beyond this, to bound the DOM
const ROOMS_SHOWN = 30;
// Error codes that refuse one frame we sent (the message was not stored).
const REFUSALS = new Set(["bad_json", "bad_utf8", "bad_client_id", "empty", "too_large", "rate_limited", "unknown_type"]);
// How long to wait before resending a message the server could not store.
const RETRY_UNAVAILABLE_MS = 2000;

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), countdown: $("countdown"), retry: $("retry"),
  join: $("join"), user: $("user"), userError: $("user-error"),
  room: $("room"), roomError: $("room-error"), leave: $("leave-btn"),
  roomsList: $("rooms-list"), roomsNote: $("rooms-note"), roomsRefresh: $("rooms-refresh"),
  log: $("log"), composer: $("composer"), text: $("text"), send: $("send-btn"),
};

// The joined room, or null. Everything about one room lives here, so that
// leaving is dropping this object; socket handlers check they still belong.
let session = null;

function newSession(room, user) {
  return {
    room, user,
    lastId: null,     // newest message ID shown: anything <= it is a duplicate
    epoch: null,      // from ready; lets the server tell us the history was reset
    conn: null,       // {ws, opened, ready, inflight: [client_id...]}
    attempt: 0,       // reconnect attempts since the last ready
    failedOpens: 0,   // consecutive sockets that never opened
    timer: 0, tick: 0, reconnectAt: 0,
    halted: false,    // server said not to come back (policy close)
    // Own messages not yet seen in the stream, by client_id, in send order.
    // state: queued (waits for a ready socket), sent, acked.
    pending: new Map(),
    // Rows of refused messages, by client_id: should the refusal have been
    // pinned on the wrong send, that message's stream copy removes the row.
    failed: new Map(),
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
function insertAboveOutbox(el) {
  const pinned = atBottom();
  ui.log.insertBefore(el, ui.log.querySelector(":scope > .outbox"));
  while (ui.log.childElementCount > LOG_LIMIT && !ui.log.firstElementChild.classList.contains("outbox")) {
    ui.log.firstElementChild.remove();
  }
  if (pinned) scrollToBottom();
}

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function notice(text, kind = "info") {
  const n = el("div", `notice notice-${kind}`, text);
  insertAboveOutbox(n);
}

function renderMessage({ id, user, message, ts }, own) {
  const row = el("div", own ? "msg own" : "msg");
  if (id) row.dataset.id = id;
  const ms = typeof ts === "number" && Number.isFinite(ts) ? ts : idTime(id || "");
  const time = el("time", "msg-time", formatHHMM(ms));
  if (Number.isFinite(ms)) {
    const d = new Date(ms);
    time.dateTime = d.toISOString();
    time.title = d.toLocaleString();
  }
  row.append(time, el("span", "msg-user", String(user ?? "?")), el("div", "msg-text", String(message)));
  return row;
}

function clearLog() {
  ui.log.replaceChildren();
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
  clearLog();
  document.title = `${room} · xroom`;
  ui.leave.hidden = false;
  ui.text.disabled = ui.send.disabled = false;
  ui.text.placeholder = `Message ${room}`;
  markCurrentRoom();
  notice(`Joined ${room} as ${user}.`);
  connect();
}

function leave(byUser = true) {
  const s = session;
  if (!s) return;
  session = null; // first: every handler of s now ignores its events
  stopTimers(s);
  if (s.conn) s.conn.ws.close(1000, "left");
  if (byUser) {
    notice(`Left ${s.room}.`);
    if (s.pending.size) notice(`${s.pending.size} unsent message(s) were dropped.`, "warn");
    for (const p of s.pending.values()) p.el.remove();
    history.replaceState(null, "", location.pathname + location.search);
    document.title = "xroom";
  }
  ui.leave.hidden = true;
  ui.text.disabled = ui.send.disabled = true;
  ui.text.placeholder = "Join a room to chat";
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
  const url = chatUrl(location, s.room, { user: s.user, since: s.lastId, epoch: s.epoch });
  let ws;
  try {
    ws = new WebSocket(url, SUBPROTOCOL);
  } catch (err) {
    notice(`Cannot open a connection: ${err.message}`, "error");
    scheduleReconnect(s);
    return;
  }
  const conn = { ws, opened: false, ready: false, inflight: [] };
  s.conn = conn;
  ws.onopen = () => {
    if (session !== s || s.conn !== conn) return;
    conn.opened = true;
    s.failedOpens = 0;
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
}

function handleClose(s, conn, ev) {
  s.conn = null;
  // Anything sent but not acknowledged goes out again after the next ready,
  // unless the replay shows it was stored (then it leaves the pending map).
  for (const p of s.pending.values()) if (p.state === "sent") p.state = "queued";
  if (ev.code === 1009) {
    // Frame over the transport limit: blame the biggest one in flight so
    // that it is not resent on every reconnect.
    const big = s.pending.get(biggestInflight(s, conn));
    if (big) fail(s, big, "too_large");
  }
  if (!conn.opened && ++s.failedOpens === 3) {
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
    case "message": return onMessage(s, f);
    case "ready": return onReady(s, conn, f);
    case "ack": return onAck(s, conn, f);
    case "gap": return onGap(s, f);
    case "error": return onError(s, conn, f);
    default: return; // the server may add frame types
  }
}

function onMessage(s, f) {
  if (!isValidId(f.id) || typeof f.message !== "string") return;
  const p = typeof f.client_id === "string" ? s.pending.get(f.client_id) : undefined;
  if (p) dropPending(s, p); // it is stored: the stream copy replaces it, never resent
  const refused = s.failed.get(f.client_id);
  if (refused) {
    s.failed.delete(f.client_id);
    refused.remove();
  }
  if (s.lastId && compareIds(f.id, s.lastId) <= 0) return; // already shown
  s.lastId = f.id;
  insertAboveOutbox(renderMessage(f, Boolean(p) || f.user === s.user));
}

function onReady(s, conn, f) {
  if (isValidId(f.last_id) && (!s.lastId || compareIds(f.last_id, s.lastId) > 0)) {
    s.lastId = f.last_id;
  }
  if (f.epoch !== undefined && f.epoch !== null && f.epoch !== "") s.epoch = String(f.epoch);
  conn.ready = true;
  s.attempt = 0;
  setStatus("connected", "connected");
  for (const p of [...s.pending.values()]) {
    // Acknowledged before a drop, yet not in the replay: trimmed meanwhile.
    if (p.state === "acked" && s.lastId && compareIds(p.ackId, s.lastId) <= 0) settle(s, p);
  }
  for (const p of s.pending.values()) if (p.state === "queued") transmit(s, p);
}

function onAck(s, conn, f) {
  const p = s.pending.get(f.client_id);
  conn.inflight = conn.inflight.filter((id) => id !== f.client_id);
  if (!p || !isValidId(f.id)) return;
  p.state = "acked";
  p.ackId = f.id;
  p.el.classList.remove("pending");
  p.status.textContent = "";
  // Normally its own message frame follows and takes its place in the log.
  if (s.lastId && compareIds(f.id, s.lastId) <= 0) settle(s, p);
}

function onGap(s, f) {
  if (f.reason === "reset") {
    notice("The room's history was reset; earlier messages are gone.", "warn");
    // IDs of the new history may be smaller than the ones we saw.
    s.lastId = null;
    for (const p of [...s.pending.values()]) if (p.state === "acked") settle(s, p);
  } else {
    notice("Some older messages were trimmed and cannot be shown.", "warn");
  }
}

function onError(s, conn, f) {
  const code = typeof f.code === "string" ? f.code : "error";
  const text = typeof f.message === "string" ? f.message : "";
  notice(text ? `${code}: ${text}` : code, "error");
  if (code === "unavailable" && s.pending.has(f.client_id)) {
    // Storage hiccup: the message was not stored; resend it (same client_id) shortly.
    conn.inflight = conn.inflight.filter((id) => id !== f.client_id);
    const p = s.pending.get(f.client_id);
    p.state = "queued";
    p.status.textContent = "retrying…";
    setTimeout(() => {
      if (s.pending.get(p.cid) === p && p.state === "queued") transmit(s, p);
    }, RETRY_UNAVAILABLE_MS);
    return;
  }
  if (!REFUSALS.has(code)) return;
  // Which send was refused: the server's client_id if it gives one; else
  // for too_large the biggest unanswered send, for the rest the oldest.
  const cid = s.pending.has(f.client_id) ? f.client_id
    : code === "too_large" ? biggestInflight(s, conn) : conn.inflight[0];
  conn.inflight = conn.inflight.filter((id) => id !== cid);
  const p = s.pending.get(cid);
  if (p) fail(s, p, code);
}

// ---- own messages ------------------------------------------------------

function queueMessage(text) {
  const s = session;
  if (!s) return;
  const cid = newClientId();
  const row = renderMessage({ user: s.user, message: text, ts: Date.now() }, true);
  row.classList.add("outbox", "pending");
  const status = el("span", "msg-state", "sending…");
  row.append(status);
  const p = { cid, text, el: row, status, state: "queued", ackId: null };
  s.pending.set(cid, p);
  ui.log.append(row);
  scrollToBottom();
  transmit(s, p);
}

// Sends p now if the socket is ready, else leaves it queued for the next ready.
function transmit(s, p) {
  const conn = s.conn;
  if (!conn || !conn.ready || conn.ws.readyState !== WebSocket.OPEN) {
    p.state = "queued";
    return;
  }
  conn.ws.send(JSON.stringify({ type: "message", message: p.text, client_id: p.cid }));
  p.state = "sent";
  conn.inflight.push(p.cid);
}

// The client_id of the largest message sent on conn and not yet answered.
function biggestInflight(s, conn) {
  let best, size = -1;
  for (const id of conn.inflight) {
    const p = s.pending.get(id);
    const n = p ? utf8Length(p.text) : -1;
    if (n > size) [best, size] = [id, n];
  }
  return best;
}

function dropPending(s, p) {
  s.pending.delete(p.cid);
  p.el.remove();
  if (s.conn) s.conn.inflight = s.conn.inflight.filter((id) => id !== p.cid);
}

// Stored, but its stream copy will not come: keep the row where it is.
function settle(s, p) {
  s.pending.delete(p.cid);
  p.el.classList.remove("outbox", "pending");
  p.el.dataset.id = p.ackId;
  p.status.remove();
}

// Refused by the server: freeze the row in the log with a way to try again.
function fail(s, p, code) {
  s.pending.delete(p.cid);
  s.failed.set(p.cid, p.el);
  p.el.classList.remove("outbox", "pending");
  p.el.classList.add("failed");
  p.status.textContent = `not sent (${code}) `;
  const again = el("button", "link", "Retry");
  again.type = "button";
  again.addEventListener("click", () => {
    s.failed.delete(p.cid);
    p.el.remove();
    if (session === s) queueMessage(p.text);
  });
  p.status.append(again);
  p.el.remove();
  insertAboveOutbox(p.el);
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

// ---- room list ---------------------------------------------------------

let roomsFetch = null;

async function loadRooms() {
  roomsFetch?.abort();
  const ctl = (roomsFetch = new AbortController());
  try {
    const res = await fetch("/api/rooms", { headers: { Accept: "application/json" }, signal: ctl.signal });
    const body = await res.json().catch(() => null);
    if (!res.ok) throw new Error(body?.error?.message || `HTTP ${res.status}`);
    renderRooms(Array.isArray(body?.rooms) ? body.rooms : []);
  } catch (err) {
    if (err.name === "AbortError") return;
    ui.roomsList.replaceChildren();
    showRoomsNote(`Could not load rooms (${err.message}).`);
  }
}

function showRoomsNote(text) {
  ui.roomsNote.textContent = text;
  ui.roomsNote.hidden = !text;
}

function renderRooms(rooms) {
  const items = rooms
    .filter((r) => r && isValidRoom(r.room))
    .slice(0, ROOMS_SHOWN)
    .map((r) => {
      const b = el("button", "room-link", r.room);
      b.type = "button";
      b.dataset.room = r.room;
      if (Number.isFinite(r.last_activity)) b.title = `last message ${new Date(r.last_activity).toLocaleString()}`;
      const li = el("li");
      li.append(b);
      return li;
    });
  ui.roomsList.replaceChildren(...items);
  showRoomsNote(items.length ? "" : "No rooms yet: join one to start it.");
  markCurrentRoom();
}

function markCurrentRoom() {
  for (const b of ui.roomsList.querySelectorAll("button[data-room]")) {
    if (session && b.dataset.room === session.room) b.setAttribute("aria-current", "true");
    else b.removeAttribute("aria-current");
  }
}

// ---- wiring ------------------------------------------------------------

function joinFromHash() {
  const room = roomFromHash(location.hash);
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
  ui.roomsList.addEventListener("click", (e) => {
    const b = e.target.closest("button[data-room]");
    if (!b) return;
    ui.room.value = b.dataset.room;
    submitJoin();
  });
  ui.roomsRefresh.addEventListener("click", loadRooms);
  ui.retry.addEventListener("click", reconnectNow);
  window.addEventListener("hashchange", joinFromHash);
  window.addEventListener("online", () => {
    if (session && !session.halted) reconnectNow();
  });
  window.addEventListener("offline", () => {
    const s = session;
    if (s && !s.conn) {
      stopTimers(s);
      setStatus("offline", "offline");
    }
  });

  loadRooms();
  if (roomFromHash(location.hash) !== null) joinFromHash();
  else (ui.user.value ? ui.room : ui.user).focus();
}

init();
