/**
 * The viewable files a turn created or changed: a walk of the workspace at the turn's end,
 * keeping files whose change time is after the turn began. The change time (ctime) is set by
 * the kernel on every write, create or rename, whatever wrote it (the agent's edit tool, a
 * script it ran, a compiler), and no tool can set it back, unlike mtime (`cp -p`, `tar`).
 * The walk obeys the workspace rules (sync-filter.ts `admit`): no secrets, ignored paths,
 * `.git`, `node_modules`, nothing over the size cap or outside the workspace.
 */
import fs from "node:fs/promises";
import path from "node:path";
import type { SyncFilter } from "../sync/sync-filter.js";
import { viewableByName } from "./artifact-kinds.js";

export interface ChangedFile {
  rel: string;
  realPath: string;
  mtimeMs: number;
}

export interface FinderOptions {
  maxBytes: number;
  /** Stop looking then (a huge workspace must not hold the turn's end). */
  deadline: number;
}

/**
 * File timestamps come from the kernel's coarse clock, up to a tick (4–10 ms) behind the
 * precise one the turn's start was read from: a file written right at the start must count.
 */
const CLOCK_SLACK_MS = 50;

/** Viewable files looked at, at most (a workspace of generated pages must not stall the turn's end). */
const MAX_CANDIDATES = 20_000;
const STAT_BATCH = 64;

export async function changedViewables(filter: SyncFilter, workspace: string, sinceMs: number, opts: FinderOptions): Promise<ChangedFile[]> {
  const candidates = await filter.list(workspace, MAX_CANDIDATES, viewableByName);
  const changed = (t: { ctimeMs: number; mtimeMs: number } | undefined) => !!t && Math.max(t.ctimeMs, t.mtimeMs) >= sinceMs - CLOCK_SLACK_MS;
  const found: ChangedFile[] = [];
  // A stat first (in parallel batches: most candidates are old), the workspace rules only for
  // what changed.
  for (let i = 0; i < candidates.length && Date.now() < opts.deadline; i += STAT_BATCH) {
    const batch = candidates.slice(i, i + STAT_BATCH);
    const stats = await Promise.all(batch.map((rel) => fs.stat(path.join(workspace, rel)).catch(() => undefined)));
    for (const [j, rel] of batch.entries()) {
      if (!changed(stats[j])) continue;
      const verdict = await filter.admit(workspace, rel, opts.maxBytes);
      if (verdict.sync && changed(verdict)) found.push({ rel, realPath: verdict.realPath, mtimeMs: verdict.mtimeMs });
    }
  }
  // In the order they were written: what the agent made first comes first.
  return found.sort((a, b) => a.mtimeMs - b.mtimeMs || a.rel.localeCompare(b.rel));
}
