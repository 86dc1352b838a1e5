/**
 * The versions of artifacts that links point at, content-addressed per user under STATE_ROOT
 * (`users/<hash>/artifacts/<sha256>`): a later edit or delete in the workspace never changes
 * what an old message shows, and one file shown in many turns is kept once. A blob's mtime is
 * the last time a link to it was handed out; blobs no link can still reach are pruned.
 */
import fs from "node:fs/promises";
import path from "node:path";
import writeFileAtomic from "write-file-atomic";

export class ArtifactStore {
  constructor(private readonly stateRoot: string) {}

  /** Where one user's version lives (both parts are checked hex: they come from a token). */
  file(user: string, sha256: string): string {
    if (!/^[0-9a-f]{16}$/.test(user) || !/^[0-9a-f]{64}$/.test(sha256)) throw new Error("not an artifact address");
    return path.join(this.dir(user), sha256);
  }

  /** Keeps `bytes` (whose hash is `sha256`); an existing copy is only marked as handed out again. */
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

  /** Removes every blob not handed out for `maxAgeMs`; returns how many. */
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
