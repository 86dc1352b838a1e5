/**
 * The workspace on the sidecar's own disk: today's readers, unchanged (a stat with ctime,
 * realpath checks, O_NOFOLLOW reads through read-inside.ts).
 */
import fs from "node:fs/promises";
import path from "node:path";
import { isBelow, readInside, type ReadInside } from "./read-inside.js";
import type { UserSpace } from "./user-space.js";
import type { DirEntry, Looked, WorkspaceFiles, Workspaces } from "./workspace-files.js";

export class DiskWorkspaceFiles implements WorkspaceFiles {
  readonly reads = "disk";

  constructor(readonly root: string) {}

  get id(): string {
    return this.root;
  }

  async list(dirRel: string): Promise<DirEntry[]> {
    const entries = await fs.readdir(path.join(this.root, dirRel), { withFileTypes: true }).catch(() => []);
    // Symlinks are candidates: `look` resolves them, and only what lies inside is read.
    return entries.filter((e) => e.isDirectory() || e.isFile() || e.isSymbolicLink()).map((e) => ({ name: e.name, dir: e.isDirectory() }));
  }

  async look(rel: string): Promise<Looked> {
    const real = await this.resolve(rel);
    if (!real.ok) return real;
    const st = await fs.stat(real.path).catch(() => undefined);
    if (!st) return { ok: false, reason: "gone" };
    if (!st.isFile()) return { ok: false, reason: "not a regular file" };
    return { ok: true, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
  }

  async read(rel: string, maxBytes: number): Promise<ReadInside> {
    const real = await this.resolve(rel);
    // Resolved first (a symlink inside to a file inside is read); read-inside.ts then refuses
    // whatever was swapped in meanwhile.
    return real.ok ? readInside(this.root, real.path, maxBytes) : real;
  }

  private async resolve(rel: string): Promise<{ ok: true; path: string } | { ok: false; reason: string }> {
    let real: string;
    let realRoot: string;
    try {
      [real, realRoot] = await Promise.all([fs.realpath(path.join(this.root, rel)), fs.realpath(this.root)]);
    } catch {
      return { ok: false, reason: "gone" };
    }
    return isBelow(real, realRoot) ? { ok: true, path: real } : { ok: false, reason: "resolves outside the workspace" };
  }
}

export const diskWorkspaces: Workspaces = {
  reads: "disk",
  files: (space: UserSpace) => new DiskWorkspaceFiles(space.workspaceDir),
};
