// Unit tests of the client's pure helpers: `node --test static/*.test.js`.
// Not embedded (static.go lists the served files by name).
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  Outbox, TYPING_SEND_MS, TYPING_SHOW_MS, activeTypers, applyPresence, backoffDelay, chatUrl,
  compareIds, outboxPrefix, outboxRecord, savedOutbox, formatAgo, formatHHMM, formatWhen, nextId, hashForRoom, idTime, isNewId, isPolicyClose, isValidId,
  isValidRoom, isValidUser, newClientId, normalizeUser, olderMessages, olderPageUrl, roomFromHash,
  roomFromLocation, shouldSendTyping, sortedMembers, titleFor, tokenFromSearch, tokenSubject, apiHeaders, typingText, utf8Length,
} from "./logic.js";

test("compareIds orders by (ms, seq) as numbers", () => {
  assert.equal(compareIds("999-0", "1000-0"), -1); // lexically the other way
  assert.equal(compareIds("1732380000000-10", "1732380000000-9"), 1);
  assert.equal(compareIds("1732380000000-3", "1732380000000-3"), 0);
  assert.equal(compareIds("1732380000000", "1732380000000-0"), 0);
  assert.equal(compareIds("0-0", "0-1"), -1);
  assert.equal(compareIds("18446744073709551615-18446744073709551615", "18446744073709551615-18446744073709551614"), 1);
  assert.equal(compareIds("007-1", "7-1"), 0);
  assert.throws(() => compareIds("abc", "1-0"), TypeError);
});

test("isValidId and idTime", () => {
  assert.ok(isValidId("1732380000000-3"));
  assert.ok(isValidId("1732380000000"));
  for (const bad of ["", "-1", "1-", "1-2-3", "a-1", " 1-1", null, 5]) assert.ok(!isValidId(bad), String(bad));
  assert.equal(idTime("1732380000000-3"), 1732380000000);
  assert.ok(Number.isNaN(idTime("x")));
});

test("room rule matches the server's", () => {
  for (const ok of ["lobby", "a", "A.b_c-9", "x".repeat(100)]) assert.ok(isValidRoom(ok), ok);
  for (const bad of ["", "x".repeat(101), "with space", "ünï", "a/b", "a#b", "a?b", null]) {
    assert.ok(!isValidRoom(bad), String(bad));
  }
});

test("user rule: 1 to 32 printable characters", () => {
  assert.ok(isValidUser("alice"));
  assert.ok(isValidUser("Zoë the 🦊"));
  assert.ok(isValidUser("🦊".repeat(32))); // counted in code points, not UTF-16 units
  assert.ok(!isValidUser("🦊".repeat(33)));
  assert.ok(!isValidUser(""));
  assert.ok(!isValidUser("tab\there"));
  assert.ok(!isValidUser("new\nline"));
  assert.ok(!isValidUser("nb\u00a0sp"));
  assert.equal(normalizeUser("  bob  "), "bob");
});

test("hash round trip", () => {
  assert.equal(roomFromHash(hashForRoom("my.room")), "my.room");
  assert.equal(roomFromHash("#room=lobby"), "lobby");
  assert.equal(roomFromHash("room=lobby&x=1"), "lobby");
  assert.equal(roomFromHash(""), null);
  assert.equal(roomFromHash("#other=1"), null);
});

test("chatUrl", () => {
  const http = { protocol: "http:", host: "localhost:8080" };
  assert.equal(chatUrl(http, "lobby", { user: "al ice" }), "ws://localhost:8080/ws/chat/lobby/?user=al+ice");
  assert.equal(
    chatUrl({ protocol: "https:", host: "x.example" }, "r", { user: "a", since: "1-2", epoch: "e1" }),
    "wss://x.example/ws/chat/r/?user=a&since=1-2&epoch=e1",
  );
  assert.equal(chatUrl(http, "r", {}), "ws://localhost:8080/ws/chat/r/");
  assert.equal(chatUrl(http, "r", { user: "a", token: "t.k+n" }), "ws://localhost:8080/ws/chat/r/?user=a&token=t.k%2Bn");
});

test("backoff doubles from 0.5 s to 15 s with ±30% jitter", () => {
  const mid = () => 0.5;
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 50].map((n) => backoffDelay(n, mid)), [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]);
  assert.equal(backoffDelay(0, () => 0), 350);
  assert.equal(backoffDelay(10, () => 0.9999999), 19500);
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay(3);
    assert.ok(d >= 2800 && d <= 5200, String(d));
  }
});

test("newClientId", () => {
  assert.match(newClientId(), /^c-[0-9a-f-]{36}$/);
  assert.match(newClientId({ getRandomValues: (b) => b.fill(171) }), /^c-(ab){16}$/);
  assert.match(newClientId(null), /^c-\w+-\w+$/);
  assert.notEqual(newClientId(), newClientId());
});

test("small helpers", () => {
  const d = new Date(2024, 0, 2, 7, 5);
  assert.equal(formatHHMM(d.getTime()), "07:05");
  assert.equal(formatHHMM(NaN), "--:--");
  assert.equal(utf8Length("é🦊"), 6);
  assert.ok(isPolicyClose(1008) && isPolicyClose(4000) && isPolicyClose(4999));
  assert.ok(!isPolicyClose(1000) && !isPolicyClose(1001) && !isPolicyClose(1006) && !isPolicyClose(5000));
});

test("room and token from the page address", () => {
  assert.equal(roomFromLocation({ hash: "#room=a.b", search: "?room=other" }), "a.b");
  assert.equal(roomFromLocation({ hash: "", search: "?room=q&token=x" }), "q");
  assert.equal(roomFromLocation({ hash: "", search: "" }), null);
  assert.equal(tokenFromSearch("?token=abc.def&room=x"), "abc.def");
  assert.equal(tokenFromSearch("?token="), null);
  assert.equal(tokenFromSearch(""), null);
});

test("older pages: oldest first, only older than what is shown, each once", () => {
  assert.equal(olderPageUrl("my.room", "5-0", 50), "/api/rooms/my.room/messages?before=5-0&limit=50");
  const page = {
    messages: [
      { id: "10-0", message: "same as shown" },
      { id: "9-1", message: "b" },
      { id: "9-0", message: "a" },
      { id: "9-0", message: "a again" },
      { id: "bad", message: "x" },
      { id: "8-0" }, // no text
      null,
    ],
    next: "9-0",
  };
  assert.deepEqual(olderMessages(page, "10-0").map((m) => m.id), ["9-0", "9-1"]);
  assert.deepEqual(olderMessages(page, "1000-0").map((m) => m.id), ["9-0", "9-1", "10-0"]);
  assert.deepEqual(olderMessages(null, "1-0"), []);
  assert.deepEqual(olderMessages({ messages: "x" }, "1-0"), []);
});

test("dedup by ID", () => {
  assert.ok(isNewId("5-0", null));
  assert.ok(isNewId("5-1", "5-0"));
  assert.ok(!isNewId("5-0", "5-0"));
  assert.ok(!isNewId("999-0", "1000-0"));
  assert.ok(!isNewId("nope", null));
});

test("formatAgo and titleFor", () => {
  const now = 1_000_000_000;
  assert.equal(formatAgo(now - 5_000, now), "just now");
  assert.equal(formatAgo(now + 5_000, now), "just now"); // clock skew
  assert.equal(formatAgo(now - 5 * 60_000, now), "5 min ago");
  assert.equal(formatAgo(now - 3 * 3_600_000, now), "3 h ago");
  assert.equal(formatAgo(now - 2 * 86_400_000, now), "2 d ago");
  assert.equal(formatAgo(NaN, now), "");
  assert.equal(titleFor("lobby", 0), "lobby · xroom");
  assert.equal(titleFor("lobby", 3), "(3) lobby · xroom");
  assert.equal(titleFor("lobby", 250), "(99+) lobby · xroom");
  assert.equal(titleFor(null, 0), "xroom");
});

test("presence: snapshot, join, leave and notices", () => {
  let r = applyPresence(new Set(["old"]), { event: "snapshot", members: [{ user: "bob" }, { user: "alice" }, { x: 1 }] }, "alice");
  assert.deepEqual([...r.members].sort(), ["alice", "bob"]);
  assert.equal(r.notice, null);
  const before = r.members;
  r = applyPresence(before, { event: "join", user: "carol" }, "alice");
  assert.equal(r.notice, "carol joined");
  assert.ok(r.members.has("carol") && !before.has("carol"), "a new set");
  assert.equal(applyPresence(r.members, { event: "join", user: "carol" }, "alice").notice, null, "already here");
  assert.equal(applyPresence(r.members, { event: "join", user: "alice" }, "alice").notice, null, "own join");
  r = applyPresence(r.members, { event: "leave", user: "bob" }, "alice");
  assert.equal(r.notice, "bob left");
  assert.ok(!r.members.has("bob"));
  assert.equal(applyPresence(r.members, { event: "leave", user: "bob" }, "alice").notice, null, "not here");
  assert.deepEqual([...applyPresence(r.members, { event: "weird" }, "alice").members].sort(), ["alice", "carol"]);
  assert.deepEqual(sortedMembers(new Set(["zed", "bob", "me", "al"]), "me"), ["me", "al", "bob", "zed"]);
  assert.equal(r.partial, undefined, "a leave says nothing about partial");
  assert.equal(applyPresence(r.members, { event: "snapshot", members: [] }, "alice").partial, false);
  const big = applyPresence(new Set(), { event: "snapshot", members: [{ user: "a" }, { user: "b" }], partial: true }, "a");
  assert.equal(big.partial, true);
  assert.equal(big.members.size, 2);
});

test("typing: throttle, expiry and wording", () => {
  assert.ok(shouldSendTyping(0, 5));
  assert.ok(!shouldSendTyping(1000, 1000 + TYPING_SEND_MS - 1));
  assert.ok(shouldSendTyping(1000, 1000 + TYPING_SEND_MS));
  const m = new Map([["bob", 1000], ["eve", 1000 + TYPING_SHOW_MS]]);
  assert.deepEqual(activeTypers(m, 1000 + TYPING_SHOW_MS).sort(), ["eve"]);
  assert.ok(!m.has("bob"), "stale typers are dropped");
  assert.equal(typingText([]), "");
  assert.equal(typingText(["bob"]), "bob is typing…");
  assert.equal(typingText(["eve", "bob"]), "bob and eve are typing…");
  assert.equal(typingText(["c", "b", "a"]), "a, b and c are typing…");
  assert.equal(typingText(["a", "b", "c", "d"]), "4 people are typing…");
});

test("outbox: queued while offline, sent once stored, never resent after its stream copy", () => {
  let n = 0;
  const box = new Outbox(() => `c-${++n}`);
  const a = box.add("typed offline");
  const b = box.add("second");
  assert.deepEqual(box.queued().map((e) => e.cid), ["c-1", "c-2"]);
  box.sent(a);
  box.sent(b);
  assert.deepEqual(box.queued(), []);
  // The socket drops before any answer: both go out again, same client_id.
  box.disconnected();
  assert.deepEqual(box.queued().map((e) => e.cid), ["c-1", "c-2"]);
  box.sent(a);
  box.sent(b);
  // a is acked, then the connection drops: acked entries are never resent.
  assert.equal(box.acked("c-1", "7-0"), a);
  box.disconnected();
  assert.deepEqual(box.queued().map((e) => e.cid), ["c-2"]);
  // b's stream copy arrives in the replay: it leaves the outbox for good.
  assert.equal(box.take("c-2"), b);
  assert.equal(box.take("c-2"), undefined);
  assert.deepEqual(box.queued(), []);
  // The page has passed a's ID without seeing it (trimmed): it settles.
  assert.deepEqual(box.settleUpTo("6-0"), []);
  assert.deepEqual(box.settleUpTo("7-0"), [a]);
  assert.equal(box.size, 0);
  assert.deepEqual(box.settleUpTo(null), []);
});

test("outbox: acks and retries", () => {
  let n = 0;
  const box = new Outbox(() => `c-${++n}`);
  const a = box.add("x");
  assert.equal(box.acked("nope", "1-0"), undefined);
  assert.equal(box.acked("c-1", "bad id"), undefined);
  box.sent(a);
  assert.equal(box.retry("c-1"), a);
  assert.equal(a.state, "queued");
  const b = box.add("y");
  box.acked("c-1", "3-0");
  box.acked("c-2", "4-0");
  assert.deepEqual(box.settleAcked(), [a, b]);
  assert.equal(box.size, 0);
  assert.equal(box.get(undefined), undefined);
  assert.match(new Outbox().add("z").cid, /^c-/);
});

test("nextId is the bound that takes in an ID", () => {
  assert.equal(nextId("5-3"), "5-4");
  assert.equal(nextId("1732380000000"), "1732380000000-1");
  assert.equal(nextId("1-18446744073709551615"), "1-18446744073709551616");
  assert.equal(compareIds("5-3", nextId("5-3")), -1);
  assert.throws(() => nextId("x"), TypeError);
});

test("formatWhen: time today, day and month before, year if another", () => {
  const now = new Date(2026, 10, 23, 22, 0).getTime();
  assert.equal(formatWhen(new Date(2026, 10, 23, 7, 5).getTime(), now), "07:05");
  assert.equal(formatWhen(new Date(2026, 10, 20, 14, 5).getTime(), now), "20 Nov 14:05");
  assert.equal(formatWhen(new Date(2025, 0, 2, 9, 30).getTime(), now), "2 Jan 2025 09:30");
  assert.equal(formatWhen(NaN, now), "--:--");
});

test("outbox: unsent messages survive a reload, with their client_id", () => {
  // A Storage as the browser has it.
  const mem = new Map();
  const storage = {
    get length() { return mem.size; },
    key: (i) => [...mem.keys()][i] ?? null,
    getItem: (k) => (mem.has(k) ? mem.get(k) : null),
  };
  const pre = outboxPrefix("room", "alice");
  mem.set(pre + "c-2", outboxRecord("second", 20));
  mem.set(pre + "c-1", outboxRecord("first", 10));
  mem.set(pre + "c-3", "{not json");
  mem.set(outboxPrefix("room", "bob") + "c-9", outboxRecord("bob's", 5));
  mem.set("xroom.user", "alice");
  const saved = savedOutbox(storage, pre);
  assert.deepEqual(saved, [{ cid: "c-1", text: "first" }, { cid: "c-2", text: "second" }]);

  const box = new Outbox(() => "never");
  const back = box.restore([...saved, { cid: "bad id!", text: "x" }, { cid: "c-8", text: "" }, null, { cid: "c-1", text: "twice" }]);
  assert.deepEqual(back.map((e) => [e.cid, e.text, e.state]), [["c-1", "first", "queued"], ["c-2", "second", "queued"]]);
  assert.deepEqual(box.restore("junk"), []);
  assert.equal(box.restore(saved).length, 0, "already there");
  assert.notEqual(outboxPrefix("a.b", "c"), outboxPrefix("a", "b.c"));
});

test("tokenSubject reads sub from a JWT without checking it, and apiHeaders sends the token", () => {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const tok = `${enc({ alg: "HS256", typ: "JWT" })}.${enc({ sub: "ünï<b>", exp: 1 })}.sig`;
  assert.equal(tokenSubject(tok), "ünï<b>");
  assert.equal(tokenSubject(`${enc({ alg: "HS256" })}.${enc({ exp: 1 })}.sig`), null);
  for (const bad of [null, "", "abc", "a.%%%.c", "a.bm90IGpzb24.c"]) assert.equal(tokenSubject(bad), null);
  assert.deepEqual(apiHeaders(null), { Accept: "application/json" });
  assert.deepEqual(apiHeaders("t.o.k"), { Accept: "application/json", Authorization: "Bearer t.o.k" });
});
