/**
 * Where a user's things live. The user id is hashed so that raw ids (often e-mails) appear
 * neither in paths nor in logs: `${root}/${sha256(id) hex, first 16}`.
 */
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";

export function userHash(userId: string): string {
  return createHash("sha256").update(userId, "utf8").digest("hex").slice(0, 16);
}

export interface UserSpace {
  hash: string;
  /** The agent's working directory: everything in it is agent-writable. */
  workspaceDir: string;
  /** The sidecar's own per-user state (session map…), never inside the workspace. */
  stateDir: string;
}

export function userSpace(workspaceRoot: string, stateRoot: string, hash: string): UserSpace {
  return {
    hash,
    workspaceDir: path.join(workspaceRoot, hash),
    stateDir: path.join(stateRoot, "users", hash),
  };
}

export async function ensureUserSpace(space: UserSpace): Promise<void> {
  await fs.mkdir(space.workspaceDir, { recursive: true, mode: 0o750 });
  await fs.mkdir(space.stateDir, { recursive: true, mode: 0o700 });
}
