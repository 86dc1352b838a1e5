/**
 * EventHub against a tiny local SSE server that plays opencode's `/global/event`, with the
 * test deciding exactly which bytes go out when.
 */
import http, { type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { createLogger } from "../../src/log/logger.js";
import { OpencodeClient } from "../../src/opencode/client.js";
import { EventHub, type EventHubOptions } from "../../src/opencode/event-hub.js";
import type { OpencodeEvent } from "../../src/opencode/events.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

class FakeOpencode {
  readonly connections: ServerResponse[] = [];
  readonly paths: string[] = [];
  readonly authHeaders: Array<string | undefined> = [];
  private readonly server = http.createServer((req, res) => {
    this.paths.push(req.url ?? "");
    if (req.url?.startsWith("/global/event")) {
      this.authHeaders.push(req.headers.authorization);
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      res.flushHeaders();
      this.connections.push(res);
    } else {
      res.writeHead(404).end();
    }
  });
  url = "";

  async start(): Promise<this> {
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async connection(n: number): Promise<ServerResponse> {
    await until(() => this.connections.length >= n, `connection #${n}`);
    return this.connections[n - 1]!;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }
}

const frame = (json: unknown) => `data: ${JSON.stringify(json)}\n\n`;
const wrapped = (directory: string, type: string, properties: Record<string, unknown> = {}) => ({ directory, payload: { type, properties } });
const CONNECTED = frame({ payload: { type: "server.connected", properties: {} } });
const HEARTBEAT = frame({ payload: { type: "server.heartbeat", properties: {} } });

type Got = Array<{ event: OpencodeEvent; directory?: string }>;

let cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.reverse()) await c();
  cleanup = [];
});

async function setup(opts: EventHubOptions = {}, auth?: { username: string; password: string }) {
  const server = await new FakeOpencode().start();
  const hub = new EventHub(new OpencodeClient(server.url, auth), createLogger("silent"), { reconnectDelayMs: 20, heartbeatTimeoutMs: 5000, ...opts });
  cleanup.push(() => server.close(), () => hub.close());
  hub.start();
  const conn = await server.connection(1);
  return { server, hub, conn };
}

function collect(hub: EventHub, sessionId?: string): Got {
  const got: Got = [];
  const listener = (event: OpencodeEvent, directory?: string) => got.push({ event, directory });
  const off = sessionId ? hub.subscribe(sessionId, listener) : hub.watch(listener);
  cleanup.push(off);
  return got;
}

describe("EventHub", () => {
  it("subscribes to /global/event with the client's credentials", async () => {
    const { server, hub, conn } = await setup({}, { username: "opencode", password: "pw" });
    expect(server.paths[0]).toBe("/global/event");
    expect(server.authHeaders[0]).toBe(`Basic ${Buffer.from("opencode:pw").toString("base64")}`);
    expect(hub.isOpen).toBe(false);
    const opened = hub.waitOpen(2000);
    conn.write(CONNECTED);
    expect(await opened).toBe(true);
    expect(hub.isOpen).toBe(true);
  });

  it("waitOpen gives up after its timeout when the server never says connected", async () => {
    const { hub } = await setup();
    expect(await hub.waitOpen(50)).toBe(false);
  });

  it("delivers events split mid-line and mid-character across writes intact", async () => {
    const { hub, conn } = await setup();
    const got = collect(hub, "ses_A");
    conn.write(CONNECTED);
    const delta = "héllo 😀 wörld — 日本";
    const bytes = Buffer.from(
      frame(wrapped("/w/café", "message.part.delta", { sessionID: "ses_A", messageID: "m", partID: "p", field: "text", delta })),
    );
    // Cut inside "data:", inside each multibyte character, and between the two newlines.
    const cuts = new Set<number>([3, bytes.length - 1]);
    for (const ch of ["é", "😀", "ö", "—", "日", "本"]) {
      const at = bytes.indexOf(Buffer.from(ch));
      expect(at).toBeGreaterThan(0);
      for (let k = 1; k < Buffer.byteLength(ch); k++) cuts.add(at + k);
    }
    let prev = 0;
    for (const cut of [...cuts].sort((a, b) => a - b)) {
      conn.write(bytes.subarray(prev, cut));
      prev = cut;
      await sleep(3);
    }
    conn.write(bytes.subarray(prev));
    await until(() => got.length === 1, "the split event");
    expect(got[0]).toEqual({
      event: { type: "message.part.delta", sessionID: "ses_A", messageID: "m", partID: "p", field: "text", delta },
      directory: "/w/café",
    });
  });

  it("delivers an event written one byte at a time", async () => {
    const { hub, conn } = await setup();
    const got = collect(hub, "ses_A");
    const bytes = Buffer.from(frame(wrapped("/w", "message.part.delta", { sessionID: "ses_A", messageID: "m", partID: "p", field: "text", delta: "é😀" })));
    for (let i = 0; i < bytes.length; i++) {
      conn.write(bytes.subarray(i, i + 1));
      if (i % 4 === 0) await sleep(1);
    }
    await until(() => got.length === 1, "the byte-by-byte event");
    expect(got[0]!.event).toMatchObject({ type: "message.part.delta", delta: "é😀" });
  });

  it("accepts both {directory, payload} events and bare ones, and CRLF framing", async () => {
    const { hub, conn } = await setup();
    const got = collect(hub, "ses_A");
    conn.write(frame(wrapped("/w/a", "session.idle", { sessionID: "ses_A" })));
    conn.write(frame({ type: "session.status", properties: { sessionID: "ses_A", status: { type: "busy" } } }));
    conn.write(`data: ${JSON.stringify(wrapped("/w/a", "session.error", { sessionID: "ses_A", error: { name: "APIError" } }))}\r\n\r\n`);
    await until(() => got.length === 3, "three events");
    expect(got).toEqual([
      { event: { type: "session.idle", sessionID: "ses_A" }, directory: "/w/a" },
      { event: { type: "session.status", sessionID: "ses_A", status: { type: "busy" } }, directory: undefined },
      { event: { type: "session.error", sessionID: "ses_A", error: { name: "APIError" } }, directory: "/w/a" },
    ]);
  });

  it("gives each subscriber only its session's events; watchers get everything", async () => {
    const { hub, conn } = await setup();
    const a = collect(hub, "ses_A");
    const b = collect(hub, "ses_B");
    const all = collect(hub);
    conn.write(CONNECTED);
    conn.write(frame(wrapped("/w/a", "session.idle", { sessionID: "ses_A" })));
    conn.write(frame(wrapped("/w/b", "session.idle", { sessionID: "ses_B" })));
    conn.write(frame(wrapped("/w/b", "message.part.updated", { sessionID: "ses_B", part: { type: "text", id: "p", messageID: "m", sessionID: "ses_B", text: "x" } })));
    conn.write(frame(wrapped("/w/a", "file.edited", { file: "/w/a/x.txt" })));
    conn.write("data: {not json}\n\n"); // dropped, the stream goes on
    conn.write(frame(wrapped("/w/a", "message.part.delta", { sessionID: "ses_A", messageID: "m", partID: "p", field: "text", delta: "d" })));
    await until(() => all.length === 6, "six events at the watcher");
    expect(a.map((g) => g.event.type)).toEqual(["session.idle", "message.part.delta"]);
    expect(b.map((g) => g.event.type)).toEqual(["session.idle", "message.part.updated"]);
    expect(all.map((g) => g.event.type)).toEqual(["server.connected", "session.idle", "session.idle", "message.part.updated", "file.edited", "message.part.delta"]);
    expect(all[4]).toEqual({ event: { type: "file.edited", file: "/w/a/x.txt" }, directory: "/w/a" });
  });

  it("keeps delivering to other listeners when one throws, and stops after unsubscribe", async () => {
    const { hub, conn } = await setup();
    const off = hub.subscribe("ses_A", () => {
      throw new Error("listener bug");
    });
    const got: OpencodeEvent[] = [];
    const off2 = hub.subscribe("ses_A", (e) => got.push(e));
    conn.write(frame(wrapped("/w", "session.idle", { sessionID: "ses_A" })));
    await until(() => got.length === 1, "first event");
    off();
    off2();
    conn.write(frame(wrapped("/w", "session.idle", { sessionID: "ses_A" })));
    conn.write(frame(wrapped("/w", "session.idle", { sessionID: "ses_B" })));
    const all = collect(hub);
    conn.write(CONNECTED);
    // The watcher sees everything after the unsubscribes; wait for the last one.
    await until(() => all.some((g) => g.event.type === "server.connected"), "marker");
    expect(got).toHaveLength(1);
  });

  it("tells subscribers the stream was lost when the server closes it, then reconnects", async () => {
    const { server, hub, conn } = await setup();
    const a = collect(hub, "ses_A");
    const b = collect(hub, "ses_B");
    conn.write(CONNECTED);
    await hub.waitOpen(2000);
    conn.write(frame(wrapped("/w", "session.status", { sessionID: "ses_A", status: { type: "busy" } })));
    await until(() => a.length === 1, "busy");
    conn.end();
    await until(() => a.length === 2 && b.length === 1, "stream.lost");
    expect(a[1]!.event).toEqual({ type: "stream.lost", reason: expect.any(String), final: false });
    expect(b[0]!.event.type).toBe("stream.lost");
    expect(hub.isOpen).toBe(false);

    const conn2 = await server.connection(2);
    expect(server.paths[1]).toBe("/global/event");
    const reopened = hub.waitOpen(2000);
    conn2.write(CONNECTED);
    expect(await reopened).toBe(true);
    conn2.write(frame(wrapped("/w", "session.idle", { sessionID: "ses_A" })));
    await until(() => a.length === 3, "event on the second connection");
    expect(a[2]!.event).toEqual({ type: "session.idle", sessionID: "ses_A" });
    expect(b).toHaveLength(1);
  });

  it("treats a silent stream as dead after the heartbeat timeout and reconnects", async () => {
    const { server, hub, conn } = await setup({ heartbeatTimeoutMs: 250 });
    const a = collect(hub, "ses_A");
    conn.write(CONNECTED);
    await hub.waitOpen(2000);
    // Heartbeats keep it alive well past the timeout…
    for (let i = 0; i < 6; i++) {
      await sleep(100);
      conn.write(HEARTBEAT);
    }
    expect(a).toEqual([]);
    expect(server.connections).toHaveLength(1);
    // …silence does not (the server keeps the connection open).
    const silentAt = Date.now();
    await until(() => a.length === 1, "stream.lost after silence", 3000);
    expect(Date.now() - silentAt).toBeGreaterThanOrEqual(200);
    expect(a[0]!.event).toMatchObject({ type: "stream.lost", reason: expect.stringMatching(/heartbeat/) });
    const conn2 = await server.connection(2);
    conn2.write(CONNECTED);
    expect(await hub.waitOpen(2000)).toBe(true);
  });

  it("reconnects after a failed connection attempt", async () => {
    // A server that answers 500 first, then streams.
    let calls = 0;
    const conns: ServerResponse[] = [];
    const srv = http.createServer((req, res) => {
      if (++calls === 1) return void res.writeHead(500).end();
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.flushHeaders();
      conns.push(res);
    });
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    cleanup.push(() => new Promise<void>((r) => (srv.closeAllConnections(), srv.close(() => r()))));
    const hub = new EventHub(new OpencodeClient(`http://127.0.0.1:${(srv.address() as AddressInfo).port}`), createLogger("silent"), {
      reconnectDelayMs: 20,
    });
    cleanup.push(() => hub.close());
    const lost = collect(hub);
    hub.start();
    await until(() => conns.length === 1, "second attempt");
    expect(lost.map((g) => g.event)).toEqual([{ type: "stream.lost", reason: expect.stringMatching(/500/), final: false }]);
    conns[0]!.write(CONNECTED);
    expect(await hub.waitOpen(2000)).toBe(true);
  });
});
