/** Artifact versions in PostgreSQL (artifacts/artifact-store.ts): a link made by one replica is served by any. */
import { checkAddress, type ArtifactStore } from "../artifacts/artifact-store.js";
import type { Database } from "./database.js";

export class PgArtifactStore implements ArtifactStore {
  constructor(private readonly db: Database) {}

  async put(user: string, sha256: string, bytes: Buffer): Promise<void> {
    checkAddress(user, sha256);
    // Shown again (the usual case for a page edited turn after turn): no need to send the bytes.
    const seen = await this.db.query("UPDATE artifact_blobs SET handed_out_at = now() WHERE user_hash = $1 AND sha256 = $2", [user, sha256]);
    if (seen.rowCount) return;
    await this.db.query("INSERT INTO artifact_blobs (user_hash, sha256, bytes) VALUES ($1, $2, $3) ON CONFLICT (user_hash, sha256) DO UPDATE SET handed_out_at = now()", [user, sha256, bytes]);
  }

  async get(user: string, sha256: string): Promise<Buffer | undefined> {
    checkAddress(user, sha256);
    const res = await this.db.query<{ bytes: Buffer }>("SELECT bytes FROM artifact_blobs WHERE user_hash = $1 AND sha256 = $2", [user, sha256]);
    return res.rows[0]?.bytes;
  }

  async prune(maxAgeMs: number, now = Date.now()): Promise<number> {
    const res = await this.db.query("DELETE FROM artifact_blobs WHERE handed_out_at < $1", [new Date(now - maxAgeMs)]);
    return res.rowCount ?? 0;
  }
}
