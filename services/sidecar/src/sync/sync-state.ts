/**
 * A user's durable sync state under STATE_ROOT (never in the workspace), as the file backend
 * keeps it (file-sync-store.ts; PostgreSQL keeps the same in tables, db/pg-sync-store.ts): the
 * manifest of what was last synced, and the outbox of changes still to send. Saved atomically;
 * pending work survives a restart (and startup reconciliation re-derives anything written
 * while the sidecar was down).
 */
import fs from "node:fs/promises";
import path from "node:path";

export interface ManifestEntry {
  /** Absent when the content was refused as a duplicate of another file in the KB. */
  fileId?: string;
  hash: string;
  size: number;
  mtimeMs: number;
  syncedAt: string;
  note?: string;
}

export interface PendingEntry {
  op: "upsert" | "delete";
  /** First time this path was queued since its last successful sync (caps debouncing). */
  queuedAt: number;
  /** Not before this time (debounce, or retry backoff). */
  nextAt: number;
  attempts: number;
  lastError?: string;
  /** Bumped by every change queued for the path (absent in files written before it existed: 0). */
  version?: number;
}

export interface UserSyncState {
  /** The Open WebUI user id (the KB is named after it and readable by it only). */
  userId: string;
  kbId?: string;
  manifest: Record<string, ManifestEntry>;
  pending: Record<string, PendingEntry>;
  lastSynced?: { path: string; op: "upsert" | "delete"; at: string };
  lastError?: { path: string; message: string; at: string };
}

export const SYNC_STATE_FILE = "sync.json";

export async function loadSyncState(stateDir: string): Promise<UserSyncState | undefined> {
  try {
    return JSON.parse(await fs.readFile(path.join(stateDir, SYNC_STATE_FILE), "utf8")) as UserSyncState;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

export async function saveSyncState(stateDir: string, state: UserSyncState): Promise<void> {
  await fs.mkdir(stateDir, { recursive: true });
  const file = path.join(stateDir, SYNC_STATE_FILE);
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, JSON.stringify(state), { mode: 0o600 });
  await fs.rename(tmp, file);
}
