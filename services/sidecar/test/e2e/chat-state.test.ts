/**
 * The chat-state contract (test/contract/chat-state.contract.ts) against both backends: files
 * with in-process locks (the embedded default), and PostgreSQL with two "replicas" (two pools)
 * on one database — plus what only PostgreSQL promises: a replica that dies frees its locks
 * and slots at once, and migrations run once however many replicas start together.
 */
import net from "node:net";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Database } from "../../src/db/database.js";
import { PgChatSessions, PgTurnLocks, PgUserSlots } from "../../src/db/pg-chat-state.js";
import { FileChatSessions, LocalTurnLocks, LocalUserSlots } from "../../src/sessions/chat-sessions.js";
import { SessionStore } from "../../src/sessions/session-store.js";
import { describeChatState } from "../contract/chat-state.contract.js";
import { createTestDatabase, type TestDatabase } from "../fixtures/postgres.js";
import { tempDir } from "../helpers/harness.js";

const log = pino({ level: "silent" });
const SRC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../src");
const fileRoot = path.join(tempDir("op-chat-state-"), "state");

describeChatState("files and in-process locks", () => ({
  shared: false,
  stateRoot: fileRoot,
  replica: async (cap) => ({ sessions: new FileChatSessions(new SessionStore()), locks: new LocalTurnLocks(), slots: new LocalUserSlots(cap) }),
}));

let testDb: TestDatabase;
const pools: Database[] = [];
beforeAll(async () => {
  testDb = await createTestDatabase();
  // Three replicas migrating at once: one applies the migration, the others wait for it.
  const starting = [0, 1, 2].map(() => new Database({ url: testDb.url, poolMax: 10, log }));
  pools.push(...starting);
  await Promise.all(starting.map((d) => d.migrate()));
});
afterAll(async () => {
  await Promise.all(pools.map((d) => d.close()));
  await testDb?.drop();
});

async function pgReplica(cap: number) {
  const db = new Database({ url: testDb.url, poolMax: 10, log });
  pools.push(db);
  return { db, sessions: new PgChatSessions(db), locks: new PgTurnLocks(db, log), slots: new PgUserSlots(db, cap, log) };
}

describeChatState("PostgreSQL", () => ({ shared: true, stateRoot: "/unused", replica: pgReplica }));

describe("PostgreSQL only", () => {
  it("migrated once, whoever started first", async () => {
    const applied = await testDb.query<{ name: string }>("SELECT name FROM pgmigrations");
    // Each migration file exactly once, in order.
    const files = fs.readdirSync(path.join(SRC, "db/migrations")).filter((f) => f.endsWith(".ts")).map((f) => f.replace(/\.ts$/, "")).sort();
    expect(files.length).toBeGreaterThanOrEqual(4);
    expect(applied.rows.map((r) => r.name)).toEqual(files);
  });

  it("frees a dead replica's session locks and user slots at once (its connections die with it)", async () => {
    const dying = await pgReplica(1);
    const survivor = await pgReplica(1);
    const dyingLock = await dying.locks.acquire("ses_dying");
    const dyingSlot = await dying.slots.tryAcquire("deadbeefdeadbeef");
    expect(await survivor.slots.tryAcquire("deadbeefdeadbeef")).toBeUndefined();
    // What a SIGKILL does to the replica's connections.
    await testDb.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'open-persona-sidecar' AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory')");
    // pg_terminate_backend only signals: the backend is gone (and its locks free) a moment later.
    let slot: Awaited<ReturnType<typeof survivor.slots.tryAcquire>>;
    await expect.poll(async () => (slot ??= await survivor.slots.tryAcquire("deadbeefdeadbeef")) !== undefined, { timeout: 5000 }).toBe(true);
    const lock = await Promise.race([survivor.locks.acquire("ses_dying"), new Promise<undefined>((r) => setTimeout(() => r(undefined), 5000))]);
    expect(lock).toBeTypeOf("function");
    await lock!();
    await slot!();
    // The dead connections' releases fail quietly (and hand the broken clients back).
    await dyingLock();
    await dyingSlot!();
  });

  it("waits at start for a database that comes up later, and gives up at its deadline", async () => {
    // A port nothing listens on yet: the database "starts" 1.5 s later (a forwarder to the real one).
    const port = await new Promise<number>((resolve) => {
      const probe = net.createServer().listen(0, "127.0.0.1", () => {
        const p = (probe.address() as net.AddressInfo).port;
        probe.close(() => resolve(p));
      });
    });
    const real = new URL(testDb.url);
    const late = new URL(testDb.url);
    late.host = `127.0.0.1:${port}`;
    const forwarder = net.createServer((c) => {
      const up = net.connect(Number(real.port), real.hostname);
      for (const s of [c, up]) s.on("error", () => (c.destroy(), up.destroy()));
      c.pipe(up).pipe(c);
    });
    const db = new Database({ url: late.toString(), poolMax: 2, log });
    const started = Date.now();
    const waiting = db.waitReachable(20_000);
    setTimeout(() => forwarder.listen(port, "127.0.0.1"), 1500);
    await waiting;
    expect(Date.now() - started).toBeGreaterThanOrEqual(1400);
    expect((await db.query<{ one: number }>("select 1 as one")).rows[0]!.one).toBe(1);
    await db.close();
    await new Promise((r) => forwarder.close(r));

    const down = new Database({ url: "postgresql://nobody:nothing@127.0.0.1:1/none", poolMax: 2, log });
    const t0 = Date.now();
    await expect(down.waitReachable(1500)).rejects.toMatchObject({ status: 503, code: "database_unavailable" });
    expect(Date.now() - t0).toBeLessThan(15_000);
    await down.close();
  });

  it("answers 503 database_unavailable when the database cannot be reached", async () => {
    const down = new Database({ url: "postgresql://nobody:nothing@127.0.0.1:1/none", poolMax: 2, log });
    const sessions = new PgChatSessions(down);
    await expect(sessions.getOrCreate({ hash: "0000000000000000", workspaceDir: "/x", stateDir: "/y" }, "chat", async () => "never")).rejects.toMatchObject({
      status: 503,
      code: "database_unavailable",
    });
    await expect(new PgUserSlots(down, 1, log).tryAcquire("0000000000000000")).rejects.toMatchObject({ status: 503 });
    await down.close();
  });
});
