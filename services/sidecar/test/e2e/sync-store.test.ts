/**
 * The sync-store contract (test/contract/sync-store.contract.ts) against both backends: files
 * under STATE_ROOT (the default), and PostgreSQL with two "replicas" (two pools) on one
 * database — plus what only PostgreSQL promises: a replica that dies frees its users' outboxes
 * at once, and an unreachable database is an error the sync retries (never a crash).
 */
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Database } from "../../src/db/database.js";
import { PgSyncStore } from "../../src/db/pg-sync-store.js";
import { FileSyncStore } from "../../src/sync/file-sync-store.js";
import { describeSyncStore } from "../contract/sync-store.contract.js";
import { createTestDatabase, type TestDatabase } from "../fixtures/postgres.js";
import { tempDir } from "../helpers/harness.js";

const log = pino({ level: "silent" });

const files = new FileSyncStore({ stateRoot: tempDir("op-sync-store-"), log });
describeSyncStore("files", () => ({ shared: false, replica: async () => files }));

let testDb: TestDatabase;
const pools: Database[] = [];
beforeAll(async () => {
  testDb = await createTestDatabase();
  const first = new Database({ url: testDb.url, poolMax: 10, log });
  pools.push(first);
  await first.migrate();
});
afterAll(async () => {
  await Promise.all(pools.map((d) => d.close()));
  await testDb?.drop();
});

function pgReplica(): PgSyncStore {
  const db = new Database({ url: testDb.url, poolMax: 10, log });
  pools.push(db);
  return new PgSyncStore(db, log);
}

describeSyncStore("PostgreSQL", () => ({ shared: true, replica: async () => pgReplica() }));

describe("PostgreSQL only", () => {
  it("frees a dead replica's claim at once (its connection dies with it), and writes nothing more through it", async () => {
    const [dying, survivor] = [pgReplica(), pgReplica()];
    const user = "dead0000dead0000";
    await dying.ensureUser(user, "owui-dead");
    await dying.queue(user, [{ path: "left.md", op: "upsert" }], 0, 1000);
    const claim = (await dying.claim(user))!;
    const entry = (await claim.nextDue())!;
    expect(await survivor.claim(user)).toBeUndefined();
    // What a SIGKILL does to the replica's connections.
    await testDb.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory')");
    // pg_terminate_backend only signals: the backend is gone (and the user free) a moment later.
    let taken: Awaited<ReturnType<PgSyncStore["claim"]>>;
    await expect.poll(async () => (taken ??= await survivor.claim(user)) !== undefined, { timeout: 5000 }).toBe(true);
    // The dead claim's outcome is not recorded: the survivor sends the entry.
    await expect(claim.complete(entry, { manifest: null })).rejects.toMatchObject({ status: 503 });
    await claim.release();
    expect(await taken!.nextDue()).toMatchObject({ path: "left.md", version: entry.version });
    await taken!.release();
  });

  it("rejects with database_unavailable when the database cannot be reached", async () => {
    const down = new Database({ url: "postgresql://nobody:nothing@127.0.0.1:1/none", poolMax: 2, log });
    const store = new PgSyncStore(down, log);
    await expect(store.queue("0000000000000000", [{ path: "a", op: "upsert" }], 0, 1000)).rejects.toMatchObject({ status: 503, code: "database_unavailable" });
    await expect(store.claim("0000000000000000")).rejects.toMatchObject({ status: 503 });
    await expect(store.dueUsers()).rejects.toMatchObject({ status: 503 });
    await down.close();
  });
});
