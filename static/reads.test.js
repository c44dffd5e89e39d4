// Unit tests of the read-position helpers of logic.js: `node --test static/*.test.js`.
// Not embedded (static.go lists the served files by name).
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  READ_MARK_MS, ReadMarker, badgeText, firstUnread, lobbyRooms, readUrl, unreadAfter, unreadByRoom, unreadUrl,
} from "./logic.js";

test("unread and read URLs escape the names", () => {
  assert.equal(unreadUrl("zoë the 🦊", 30), "/api/users/zo%C3%AB%20the%20%F0%9F%A6%8A/unread?limit=30");
  assert.equal(unreadUrl("a/b?c", 1), "/api/users/a%2Fb%3Fc/unread?limit=1");
  assert.equal(readUrl("team.1", "al ice&x"), "/api/rooms/team.1/read?user=al+ice%26x");
});

test("unreadByRoom keeps well-formed rooms only", () => {
  const m = unreadByRoom({
    rooms: [
      { room: "lobby", unread: 3, last_read: "5-0", last_id: "9-1" },
      { room: "busy", unread: 100, more: true, last_read: "0-0", last_id: "9-2" },
      { room: "bad name", unread: 1, last_read: "0-0", last_id: "1-0" },
      { room: "neg", unread: -1, last_read: "0-0", last_id: "1-0" },
      { room: "frac", unread: 1.5, last_read: "0-0", last_id: "1-0" },
      { room: "noid", unread: 1, last_read: "0-0" },
      null,
    ],
  });
  assert.deepEqual([...m.keys()], ["lobby", "busy"]);
  assert.deepEqual(m.get("lobby"), { unread: 3, more: false, lastRead: "5-0", lastId: "9-1" });
  assert.equal(m.get("busy").more, true);
  assert.equal(unreadByRoom(null).size, 0);
  assert.equal(unreadByRoom({ rooms: "x" }).size, 0);
});

test("badgeText", () => {
  assert.equal(badgeText(0, false), "");
  assert.equal(badgeText(0, true), "");
  assert.equal(badgeText(3, false), "3");
  assert.equal(badgeText(100, true), "100+");
  assert.equal(badgeText(NaN, false), "");
});

test("lobbyRooms adds rooms with unread messages the list left out, and keeps them", () => {
  const rooms = [
    { room: "a", last_activity: 500 },
    { room: "b", last_activity: 400 },
    { room: "c", last_activity: 300 },
  ];
  const unread = new Map([
    ["c", { unread: 2, more: false, lastRead: "1-0", lastId: "300-0" }],
    ["old", { unread: 1, more: false, lastRead: "1-0", lastId: "100-0" }],
    ["read", { unread: 0, more: false, lastRead: "50-0", lastId: "50-0" }],
  ]);
  assert.deepEqual(lobbyRooms(rooms, unread, 10).map((r) => r.room), ["a", "b", "c", "old"]);
  assert.equal(lobbyRooms(rooms, unread, 10)[3].last_activity, 100);
  // Cut to 3: the rooms with unread messages stay, the rest by activity; shown by activity.
  assert.deepEqual(lobbyRooms(rooms, unread, 3).map((r) => r.room), ["a", "c", "old"]);
  assert.deepEqual(lobbyRooms(rooms, new Map(), 2).map((r) => r.room), ["a", "b"]);
  assert.deepEqual(lobbyRooms(null, null, 5), []);
});

test("firstUnread: the first message of someone else after the position", () => {
  const rows = [{ id: "1-0" }, { id: "2-0" }, { id: "3-0", own: true }, { id: "10-0" }, { id: "11-0" }];
  assert.equal(firstUnread(rows, "2-0"), "10-0"); // own 3-0 is not unread
  assert.equal(firstUnread(rows, "9-5"), "10-0"); // compared as numbers: "9-5" < "10-0"
  assert.equal(firstUnread(rows, "0-0"), "1-0");
  assert.equal(firstUnread(rows, "11-0"), null);
  assert.equal(firstUnread(rows, null), null); // never read: no divider
  assert.equal(unreadAfter(rows, "2-0"), 2);
  assert.equal(unreadAfter(rows, "11-0"), 0);
  assert.equal(unreadAfter(rows, null), 4);
});

test("ReadMarker marks the newest seen at most once a second, never backwards", () => {
  const m = new ReadMarker();
  assert.deepEqual(m.take(0), {});
  m.known("5-0");
  m.seen("4-0"); // already read
  assert.deepEqual(m.take(0), {});
  m.seen("6-0");
  m.seen("8-0");
  m.seen("7-0");
  assert.deepEqual(m.take(1000), { id: "8-0" });
  m.seen("9-0");
  assert.deepEqual(m.take(1000 + READ_MARK_MS - 300), { wait: 300 });
  m.seen("10-0");
  assert.deepEqual(m.take(1000 + READ_MARK_MS), { id: "10-0" });
  // Another device read further: what this page saw before that is not marked.
  m.seen("11-0");
  m.known("12-0");
  assert.deepEqual(m.take(5000), {});
  assert.equal(m.pos, "12-0");
  m.known("3-0"); // an older position changes nothing
  assert.equal(m.pos, "12-0");
  m.seen("99-0");
  assert.deepEqual(m.take(5000), { id: "99-0" });
});
