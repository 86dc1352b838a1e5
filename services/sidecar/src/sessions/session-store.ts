/**
 * The chat → opencode session map, one JSON file per user under STATE_ROOT. Reads and
 * writes happen under a file lock (proper-lockfile) that also holds across sidecar
 * processes, so concurrent first requests for one chat create exactly one session.
 */
import fs from "node:fs/promises";
import path from "node:path";
import lockfile from "proper-lockfile";

export interface SessionRecord {
  sessionId: string;
  createdAt: string;
}

type SessionMap = Record<string, SessionRecord>;

export class SessionStore {
  /** In-process queue per file: proper-lockfile only retries, so serialize here first. */
  private readonly local = new Map<string, Promise<unknown>>();

  /**
   * Returns the session for `chatKey`, creating it with `create` under the lock when absent.
   * `create` runs at most once per chat, whatever the concurrency.
   */
  async getOrCreate(stateDir: string, chatKey: string, create: () => Promise<string>): Promise<{ sessionId: string; created: boolean }> {
    return this.withLock(stateDir, async (map, save) => {
      const found = map[chatKey];
      if (found) return { sessionId: found.sessionId, created: false };
      const sessionId = await create();
      map[chatKey] = { sessionId, createdAt: new Date().toISOString() };
      await save(map);
      return { sessionId, created: true };
    });
  }

  /**
   * Replaces the session of `chatKey` (after opencode lost it) unless someone else already
   * did: `staleId` is the id the caller found missing.
   */
  async replace(stateDir: string, chatKey: string, staleId: string, create: () => Promise<string>): Promise<string> {
    return this.withLock(stateDir, async (map, save) => {
      const current = map[chatKey];
      if (current && current.sessionId !== staleId) return current.sessionId;
      const sessionId = await create();
      map[chatKey] = { sessionId, createdAt: new Date().toISOString() };
      await save(map);
      return sessionId;
    });
  }

  async get(stateDir: string, chatKey: string): Promise<string | undefined> {
    return (await readMap(fileOf(stateDir)))[chatKey]?.sessionId;
  }

  private async withLock<T>(stateDir: string, fn: (map: SessionMap, save: (m: SessionMap) => Promise<void>) => Promise<T>): Promise<T> {
    const file = fileOf(stateDir);
    const prev = this.local.get(file) ?? Promise.resolve();
    const run = prev.catch(() => {}).then(async () => {
      await fs.mkdir(stateDir, { recursive: true });
      const release = await lockfile.lock(stateDir, {
        lockfilePath: `${file}.lock`,
        // A lock whose holder died is taken over after `stale` ms (its mtime stops updating).
        stale: 15_000,
        retries: { retries: 100, minTimeout: 20, maxTimeout: 250, factor: 1.5 },
      });
      try {
        return await fn(await readMap(file), (m) => writeAtomic(file, JSON.stringify(m, null, 2)));
      } finally {
        await release();
      }
    });
    this.local.set(file, run);
    try {
      return await run;
    } finally {
      if (this.local.get(file) === run) this.local.delete(file);
    }
  }
}

const fileOf = (stateDir: string) => path.join(stateDir, "sessions.json");

async function readMap(file: string): Promise<SessionMap> {
  try {
    return JSON.parse(await fs.readFile(file, "utf8")) as SessionMap;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw e;
  }
}

async function writeAtomic(file: string, text: string): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, text, { mode: 0o600 });
  await fs.rename(tmp, file);
}
