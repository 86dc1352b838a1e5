/**
 * The viewable files a turn created or changed, on disk: a walk of the workspace at the
 * turn's end, keeping files whose change time is after the turn began. The change time
 * (ctime) is set by the kernel on every write, create or rename, whatever wrote it (the
 * agent's edit tool, a script it ran, a compiler), and no tool can set it back, unlike mtime
 * (`cp -p`, `tar`). Through the runner there is no ctime: turn-changes.ts says what changed.
 * The walk obeys the workspace rules (sync-filter.ts `admit`): no secrets, ignored paths,
 * `.git`, `node_modules`, nothing over the size cap or outside the workspace.
 */
import type { SyncFilter } from "../sync/sync-filter.js";
import type { WorkspaceFiles } from "../workspace/workspace-files.js";
import { viewableByName } from "./artifact-kinds.js";

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

/** Workspace-relative paths of the viewable files changed since `sinceMs`, in the order they were written. */
export async function changedViewables(filter: SyncFilter, files: WorkspaceFiles, sinceMs: number, opts: FinderOptions): Promise<string[]> {
  const candidates = await filter.list(files, MAX_CANDIDATES, viewableByName);
  const changed = (t: { ctimeMs: number; mtimeMs: number } | undefined) => !!t && Math.max(t.ctimeMs, t.mtimeMs) >= sinceMs - CLOCK_SLACK_MS;
  const found: Array<{ rel: string; mtimeMs: number }> = [];
  // A stat first (in parallel batches: most candidates are old), the workspace rules only for
  // what changed.
  for (let i = 0; i < candidates.length && Date.now() < opts.deadline; i += STAT_BATCH) {
    const batch = candidates.slice(i, i + STAT_BATCH);
    const looks = await Promise.all(batch.map((rel) => files.look(rel)));
    for (const [j, rel] of batch.entries()) {
      const looked = looks[j];
      if (!looked?.ok || !changed(looked)) continue;
      const verdict = await filter.admit(files, rel, opts.maxBytes);
      if (verdict.sync && changed(verdict.facts)) found.push({ rel, mtimeMs: verdict.facts!.mtimeMs });
    }
  }
  // In the order they were written: what the agent made first comes first.
  return found.sort((a, b) => a.mtimeMs - b.mtimeMs || a.rel.localeCompare(b.rel)).map((f) => f.rel);
}
