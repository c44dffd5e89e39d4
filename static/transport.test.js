// Unit tests of the page's transports: `cd static && node --test`.
// Not embedded (static.go lists the served files by name).
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  EventStream, SEND_REFUSALS, SSE, WEBSOCKET, WS_FAILS_BEFORE_SSE, frameFromSendReply, openWebSocket,
  sendRequest, sendUrl, shouldFallBack, streamUrl, transportFromSearch,
} from "./transport.js";

test("transportFromSearch", () => {
  assert.equal(transportFromSearch("?transport=sse"), SSE);
  assert.equal(transportFromSearch("?room=a&transport=websocket"), WEBSOCKET);
  assert.equal(transportFromSearch("?transport=carrier-pigeon"), null);
  assert.equal(transportFromSearch(""), null);
  assert.equal(transportFromSearch(undefined), null);
});

test("shouldFallBack: only WebSockets that never opened in a page where none did", () => {
  const n = WS_FAILS_BEFORE_SSE;
  assert.ok(shouldFallBack({ kind: WEBSOCKET, opened: false, everOpened: false, failedOpens: n }));
  assert.ok(!shouldFallBack({ kind: WEBSOCKET, opened: false, everOpened: false, failedOpens: n - 1 }));
  assert.ok(!shouldFallBack({ kind: WEBSOCKET, opened: false, everOpened: true, failedOpens: n + 5 }), "a restart after a socket worked");
  assert.ok(!shouldFallBack({ kind: WEBSOCKET, opened: true, everOpened: false, failedOpens: n }));
  assert.ok(!shouldFallBack({ kind: SSE, opened: false, everOpened: false, failedOpens: n + 5 }));
});

test("streamUrl and sendUrl", () => {
  const http = { protocol: "http:", host: "localhost:8080" };
  assert.equal(streamUrl(http, "lobby", { user: "al ice" }), "http://localhost:8080/sse/chat/lobby/?user=al+ice");
  assert.equal(streamUrl({ protocol: "https:", host: "x.example" }, "a.b", { since: "5-1", epoch: "e1", token: "t" }),
    "https://x.example/sse/chat/a.b/?since=5-1&epoch=e1&token=t");
  assert.equal(streamUrl(http, "lobby"), "http://localhost:8080/sse/chat/lobby/");
  assert.equal(sendUrl("a.b"), "/api/rooms/a.b/messages");
});

test("sendRequest: the token names the user, else the body does", () => {
  const frame = { type: "message", message: "hi", client_id: "c-1" };
  const plain = sendRequest(frame, { user: "zoë" });
  assert.equal(plain.method, "POST");
  assert.deepEqual(JSON.parse(plain.body), { message: "hi", client_id: "c-1", user: "zoë" });
  assert.equal(plain.headers.Authorization, undefined);
  assert.equal(plain.headers["Content-Type"], "application/json");
  const signed = sendRequest(frame, { user: "zoë", token: "tok" });
  assert.deepEqual(JSON.parse(signed.body), { message: "hi", client_id: "c-1" });
  assert.equal(signed.headers.Authorization, "Bearer tok");
});

test("frameFromSendReply: the frames the WebSocket would have sent", () => {
  assert.deepEqual(frameFromSendReply(201, { id: "5-1", duplicate: false }, "c-1"), { type: "ack", client_id: "c-1", id: "5-1", duplicate: false });
  assert.deepEqual(frameFromSendReply(200, { id: "5-1", duplicate: true }, "c-1"), { type: "ack", client_id: "c-1", id: "5-1", duplicate: true });
  const limited = frameFromSendReply(429, { error: { code: "rate_limited", message: "slow down", retry_after_ms: 1500 } }, "c-2");
  assert.deepEqual(limited, { type: "error", code: "rate_limited", message: "slow down", client_id: "c-2", retry_after_ms: 1500 });
  assert.equal(frameFromSendReply(413, { error: { code: "request_entity_too_large", message: "big" } }, "c").code, "too_large");
  assert.equal(frameFromSendReply(403, { error: { code: "bad_origin", message: "no" } }, "c").code, "bad_origin");
  for (const [status, body] of [[503, { error: { code: "redis_unavailable" } }], [0, null], [502, "<html>"], [201, {}]]) {
    const f = frameFromSendReply(status, body, "c-3");
    assert.equal(f.type, "error");
    assert.equal(f.code, "unavailable", `status ${status}`);
    assert.equal(f.client_id, "c-3");
  }
  assert.ok(SEND_REFUSALS.includes("token_expired") && SEND_REFUSALS.includes("user_mismatch"));
});

// A stand-in EventSource: the test fires its events.
class FakeEventSource {
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.listeners = {};
    FakeEventSource.last = this;
  }
  addEventListener(type, f) {
    (this.listeners[type] ||= []).push(f);
  }
  fire(type, ev = {}) {
    if (type === "open") return this.onopen?.(ev);
    for (const f of this.listeners[type] || []) f(ev);
  }
  close() {
    this.readyState = 2;
    this.closed = true;
  }
}

const tick = () => new Promise((r) => setTimeout(r, 5));

test("EventStream: frames through onmessage, interruptions, refusals", async () => {
  const got = [];
  const s = new EventStream({ url: "http://h/sse/chat/r/", room: "r", user: "ann", EventSourceImpl: FakeEventSource, fetchImpl: null });
  const es = FakeEventSource.last;
  s.onmessage = (ev) => got.push(JSON.parse(ev.data));
  let opens = 0, interrupts = 0, closes = [];
  s.onopen = () => opens++;
  s.oninterrupt = () => interrupts++;
  s.onclose = (ev) => closes.push(ev.code);
  assert.equal(s.protocol, "xroom.v1");
  assert.equal(s.readyState, 0);
  es.readyState = 1;
  es.fire("open");
  assert.equal(s.readyState, 1);
  for (const type of ["message", "ready", "gap", "presence"]) es.fire(type, { data: JSON.stringify({ type }) });
  es.fire("error", { data: JSON.stringify({ type: "error", code: "unavailable" }) }); // the server's
  assert.deepEqual(got.map((f) => f.type), ["message", "ready", "gap", "presence", "error"]);
  assert.equal(interrupts, 0);
  es.readyState = 0;
  es.fire("error", {}); // the connection dropped: EventSource comes back by itself
  assert.equal(interrupts, 1);
  assert.equal(s.readyState, 0);
  es.fire("error", {}); // still trying: one interruption, not two
  assert.equal(interrupts, 1);
  es.readyState = 1;
  es.fire("open");
  assert.equal(opens, 2);
  es.readyState = 2;
  es.fire("error", {}); // refused: EventSource gives up, the page reconnects
  await tick();
  assert.deepEqual(closes, [1006]);
  assert.equal(s.readyState, 3);
  es.fire("message", { data: "{}" });
  assert.equal(got.length, 5, "nothing after the close");
});

test("EventStream: message frames are POSTed in order, one at a time, and answered as ack or error frames; typing is dropped", async () => {
  const requests = [];
  const replies = [
    { status: 201, body: { id: "9-0", duplicate: false } },
    { status: 429, body: { error: { code: "rate_limited", message: "slow", retry_after_ms: 10 } } },
    null, // no answer: network down
  ];
  let inFlight = 0, most = 0;
  const fetchImpl = async (url, opts) => {
    requests.push({ url, opts });
    most = Math.max(most, ++inFlight);
    await tick();
    inFlight--;
    const r = replies.shift();
    if (!r) throw new TypeError("network error");
    return { status: r.status, json: async () => r.body };
  };
  const s = new EventStream({ url: "u", room: "lobby", user: "ann", token: "tok", EventSourceImpl: FakeEventSource, fetchImpl });
  const got = [];
  s.onmessage = (ev) => got.push(JSON.parse(ev.data));
  s.send(JSON.stringify({ type: "message", message: "early", client_id: "c-0" })); // not open yet: dropped
  FakeEventSource.last.fire("open");
  s.send('{"type":"typing"}');
  s.send("not json");
  for (const cid of ["c-1", "c-2", "c-3"]) s.send(JSON.stringify({ type: "message", message: "hi " + cid, client_id: cid }));
  await s.sending;
  assert.equal(requests.length, 3);
  assert.equal(most, 1, "one send at a time");
  assert.deepEqual(requests.map((r) => JSON.parse(r.opts.body).client_id), ["c-1", "c-2", "c-3"]);
  assert.equal(requests[0].url, "/api/rooms/lobby/messages");
  assert.equal(requests[0].opts.headers.Authorization, "Bearer tok");
  assert.deepEqual(JSON.parse(requests[0].opts.body), { message: "hi c-1", client_id: "c-1" });
  assert.deepEqual(got, [
    { type: "ack", client_id: "c-1", id: "9-0", duplicate: false },
    { type: "error", code: "rate_limited", message: "slow", client_id: "c-2", retry_after_ms: 10 },
    { type: "error", code: "unavailable", message: "HTTP error", client_id: "c-3" },
  ]);
  s.close(1000, "left");
  assert.ok(FakeEventSource.last.closed);
});

test("openWebSocket closes a socket that does not open in time", async () => {
  class FakeWS {
    constructor(url, protocol) {
      this.url = url;
      this.protocol = protocol;
      this.readyState = 0;
      this.listeners = {};
    }
    addEventListener(type, f) {
      (this.listeners[type] ||= []).push(f);
    }
    close() {
      this.readyState = 3;
      for (const f of this.listeners.close || []) f({ code: 1006 });
    }
  }
  const ws = openWebSocket("ws://h/", "xroom.v1", { WebSocketImpl: FakeWS, timeoutMs: 1 });
  await tick();
  assert.equal(ws.readyState, 3);
});
