/**
 * The contract of the knowledge-base sync's durable state (sync/sync-store.ts), run against
 * every backend: files under STATE_ROOT, and PostgreSQL. `replica()` makes one "replica" of
 * the backend over the same underlying store; where replicas matter the suite makes two (a
 * backend whose replicas share nothing hands out the same one twice).
 */
import { describe, expect, it } from "vitest";
import type { ManifestEntry } from "../../src/sync/sync-state.js";
import type { SyncStore } from "../../src/sync/sync-store.js";

export interface SyncStoreBackend {
  replica(): Promise<SyncStore>;
  /** Whether replicas made here share state (files do not). */
  shared: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let n = 0;
const newUser = () => `${(n++).toString(16).padStart(4, "0")}${"c".repeat(12)}`;

export function describeSyncStore(name: string, backend: () => SyncStoreBackend): void {
  describe(`sync store: ${name}`, () => {
    /** Two replicas (the same one twice when the backend shares nothing) and a fresh user on them. */
    const setup = async () => {
      const b = backend();
      const first = await b.replica();
      const second = b.shared ? await b.replica() : first;
      const user = newUser();
      await first.ensureUser(user, `owui-${user}`);
      return { a: first, b: second, user };
    };

    it("knows a user once created, with an empty outbox and manifest", async () => {
      const { a, b, user } = await setup();
      expect(await a.status(newUser())).toBeUndefined();
      await b.ensureUser(user, "someone-else"); // never replaces the first id
      expect(await b.status(user)).toEqual({ pending: 0, pendingPaths: [], syncedFiles: 0 });
      expect(await a.manifest(user)).toEqual({});
      expect(await a.nextDueIn(user)).toBeUndefined();
      expect(await a.users()).toContain(user);
      const claim = (await a.claim(user))!;
      expect(claim.user).toMatchObject({ userId: `owui-${user}` });
      expect(await claim.nextDue()).toBeUndefined();
      await claim.release();
    });

    it("keeps one entry per path however many replicas queue it, debounced and capped", async () => {
      const { a, b, user } = await setup();
      const due = await a.queue(user, [{ path: "notes.md", op: "upsert" }], 400, 600);
      expect(due).toBeGreaterThan(250);
      expect(due).toBeLessThanOrEqual(400);
      await sleep(300);
      // Debounced again, but never later than maxDelay after the first change.
      const again = await b.queue(user, [{ path: "notes.md", op: "upsert" }, { path: "other.md", op: "upsert" }], 400, 600);
      expect(again).toBeLessThanOrEqual(310);
      const status = (await a.status(user))!;
      expect(status.pending).toBe(2);
      expect([...status.pendingPaths].sort()).toEqual(["notes.md", "other.md"]);
      expect(await a.dueUsers()).not.toContain(user);
      expect(await a.nextDueIn(user)).toBeLessThanOrEqual(310);
      await sleep(350);
      expect(await b.dueUsers()).toContain(user);
      const claim = (await b.claim(user))!;
      const entry = (await claim.nextDue())!;
      expect(entry).toMatchObject({ path: "notes.md", op: "upsert", attempts: 0 });
      await claim.release();
    });

    it("lets one holder at a time work a user's outbox, across replicas", async () => {
      const { a, b, user } = await setup();
      const claim = await a.claim(user);
      expect(claim).toBeDefined();
      expect(await b.claim(user)).toBeUndefined();
      expect(await a.claim(user)).toBeUndefined();
      // Other users are not held up.
      const other = newUser();
      await b.ensureUser(other, "other");
      const otherClaim = await b.claim(other);
      expect(otherClaim).toBeDefined();
      await otherClaim!.release();
      await claim!.release();
      const next = await b.claim(user);
      expect(next).toBeDefined();
      await next!.release();
    });

    it("removes a sent entry unless a change arrived while it was sent, and records the outcome", async () => {
      const { a, b, user } = await setup();
      await a.queue(user, [{ path: "notes.md", op: "upsert" }], 0, 1000);
      const claim = (await a.claim(user))!;
      const sending = (await claim.nextDue())!;
      // Meanwhile another replica hears of a newer change to the same file.
      await b.queue(user, [{ path: "notes.md", op: "upsert" }], 0, 1000);
      const v1: ManifestEntry = { fileId: "file-1", hash: "h1", size: 11, mtimeMs: 1700000000123.4567, syncedAt: new Date().toISOString() };
      await claim.complete(sending, { manifest: v1, lastSynced: { path: "notes.md", op: "upsert", at: v1.syncedAt } });
      expect(await b.manifestEntry(user, "notes.md")).toEqual(v1);
      expect((await b.status(user))!).toMatchObject({ pending: 1, syncedFiles: 1, lastSynced: { path: "notes.md", op: "upsert" } });
      // The newer change is still there, and goes the same way.
      const newer = (await claim.nextDue())!;
      expect(newer.path).toBe("notes.md");
      expect(newer.version).not.toBe(sending.version);
      const refused: ManifestEntry = { hash: "h2", size: 12, mtimeMs: 1700000000999, syncedAt: new Date().toISOString(), note: "duplicate content of another file" };
      await claim.complete(newer, { manifest: refused });
      expect(await claim.nextDue()).toBeUndefined();
      expect(await a.manifest(user)).toEqual({ "notes.md": refused });
      expect((await b.status(user))!).toMatchObject({ pending: 0, syncedFiles: 0 });
      // A delete's outcome removes the path.
      await b.queue(user, [{ path: "notes.md", op: "delete" }], 0, 1000);
      const del = (await claim.nextDue())!;
      expect(del.op).toBe("delete");
      await claim.complete(del, { manifest: null, lastSynced: { path: "notes.md", op: "delete", at: new Date().toISOString() } });
      expect(await a.manifestEntry(user, "notes.md")).toBeUndefined();
      expect((await b.status(user))!.lastSynced).toMatchObject({ path: "notes.md", op: "delete" });
      await claim.release();
    });

    it("retries a failed entry after its backoff (kept by newer changes), or drops it", async () => {
      const { a, b, user } = await setup();
      await a.queue(user, [{ path: "a.md", op: "upsert" }, { path: "b.md", op: "upsert" }], 0, 1000);
      const claim = (await a.claim(user))!;
      const first = (await claim.nextDue())!;
      const error = { path: first.path, message: "Open WebUI unreachable", at: new Date().toISOString() };
      await claim.fail(first, 500, error);
      expect((await b.status(user))!.lastError).toEqual(error);
      // A new change during the backoff does not cut it short.
      expect(await b.queue(user, [{ path: first.path, op: "upsert" }], 0, 1000)).toBeGreaterThan(300);
      const second = (await claim.nextDue())!;
      expect(second.path).not.toBe(first.path);
      await claim.fail(second, undefined, { ...error, path: second.path });
      expect(await claim.nextDue()).toBeUndefined();
      expect((await b.status(user))!.pendingPaths).toEqual([first.path]);
      await sleep(550);
      const retried = (await claim.nextDue())!;
      expect(retried).toMatchObject({ path: first.path, attempts: 1, lastError: "Open WebUI unreachable" });
      await claim.release();
    });

    it("records the KB id, and forgets the manifest for a new KB", async () => {
      const { a, b, user } = await setup();
      await a.queue(user, [{ path: "x.md", op: "upsert" }], 0, 1000);
      const claim = (await a.claim(user))!;
      await claim.complete((await claim.nextDue())!, { manifest: { fileId: "f", hash: "h", size: 1, mtimeMs: 1, syncedAt: new Date().toISOString() } });
      expect(await claim.setKb("kb-1")).toBe(0);
      expect(claim.user.kbId).toBe("kb-1");
      expect(await b.manifestEntry(user, "x.md")).toBeDefined();
      await claim.setKb(undefined);
      expect(claim.user.kbId).toBeUndefined();
      expect(await claim.setKb("kb-2", true)).toBe(1);
      expect(await b.manifest(user)).toEqual({});
      await claim.release();
      const again = (await b.claim(user))!;
      expect(again.user.kbId).toBe("kb-2");
      await again.release();
    });
  });
}
