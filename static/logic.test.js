// Unit tests of the client's pure helpers: `node --test static/`.
// Not embedded (static.go lists the served files by name).
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  backoffDelay, chatUrl, compareIds, formatHHMM, hashForRoom, idTime,
  isPolicyClose, isValidId, isValidRoom, isValidUser, newClientId,
  normalizeUser, roomFromHash, utf8Length,
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
