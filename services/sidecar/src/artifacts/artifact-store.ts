/**
 * The versions of artifacts that links point at, content-addressed per user (a later edit or
 * delete in the workspace never changes what an old message shows, and one file shown in many
 * turns is kept once). A version's "handed out" time is the last time a link to it was made;
 * versions no link can still reach are pruned. Two backends: files under STATE_ROOT (one
 * process; the default) and PostgreSQL (replicas, db/pg-artifact-store.ts: any replica serves
 * any link).
 */
import fs from "node:fs/promises";
import path from "node:path";
import writeFileAtomic from "write-file-atomic";

export interface ArtifactStore {
  /** Keeps `bytes` (whose hash is `sha256`); an existing copy is only marked as handed out again. */
  put(user: string, sha256: string, bytes: Buffer): Promise<void>;
  /** The stored version, or undefined once pruned (or never kept). */
  get(user: string, sha256: string): Promise<Buffer | undefined>;
  /** Removes every version not handed out for `maxAgeMs`; returns how many. */
  prune(maxAgeMs: number, now?: number): Promise<number>;
}

/** Both parts come from a token: checked to be the hex they must be before any use. */
export function checkAddress(user: string, sha256: string): void {
  if (!/^[0-9a-f]{16}$/.test(user) || !/^[0-9a-f]{64}$/.test(sha256)) throw new Error("not an artifact address");
}

/** `STATE_ROOT/users/<hash>/artifacts/<sha256>`; a file's mtime is when it was last handed out. */
export class FileArtifactStore implements ArtifactStore {
  constructor(private readonly stateRoot: string) {}

  /** Where one user's version lives. */
  file(user: string, sha256: string): string {
    checkAddress(user, sha256);
    return path.join(this.dir(user), sha256);
  }

  async put(user: string, sha256: string, bytes: Buffer): Promise<void> {
    const file = this.file(user, sha256);
    const now = new Date();
    try {
      await fs.utimes(file, now, now);
      return;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
    await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    await writeFileAtomic(file, bytes, { mode: 0o600, fsync: false });
  }

  async get(user: string, sha256: string): Promise<Buffer | undefined> {
    try {
      return await fs.readFile(this.file(user, sha256));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw e;
    }
  }

  async prune(maxAgeMs: number, now = Date.now()): Promise<number> {
    const users = await fs.readdir(path.join(this.stateRoot, "users")).catch(() => [] as string[]);
    let removed = 0;
    for (const user of users) {
      const dir = this.dir(user);
      for (const name of await fs.readdir(dir).catch(() => [] as string[])) {
        const file = path.join(dir, name);
        const st = await fs.stat(file).catch(() => undefined);
        if (st && now - st.mtimeMs > maxAgeMs) {
          await fs.rm(file, { force: true });
          removed++;
        }
      }
    }
    return removed;
  }

  private dir(user: string): string {
    return path.join(this.stateRoot, "users", user, "artifacts");
  }
}
