/**
 * What a turn changed, read through its runner (no ctime through opencode's file API).
 *
 * The runner's file events say it only for opencode's own writing tools (measured on 1.18):
 * `write`, `edit` and `apply_patch` publish `file.edited` and `file.watcher.updated`; a file a
 * shell command writes is reported only when opencode's watcher runs, i.e. in a git workspace
 * with OPENCODE_EXPERIMENTAL_FILEWATCHER set, and even then not under `build/`, `out/`,
 * `dist/`, `tmp/`…. So:
 * - a turn whose tools all report their writes (or write nothing): its events, as the runner
 *   emitted them for the turn's directory between the turn's start and end, in the order of
 *   their last writes;
 * - a turn that ran anything else (a shell, a subagent, an MCP tool): those events first, then
 *   whatever else changed by content: the viewable files' hashes as the turn began (as the
 *   user's previous turn ended, remembered here; else read as the turn starts, alongside the
 *   agent's first steps) against their hashes at its end.
 */
import type { RunnerEndpoint } from "../runners/runner.js";
import type { SyncFilter } from "../sync/sync-filter.js";
import { contentHashes } from "../workspace/content-hashes.js";
import { fileChange } from "../workspace/file-events.js";
import type { WorkspaceFiles } from "../workspace/workspace-files.js";
import { viewableByName } from "./artifact-kinds.js";

/** Viewable files looked at, at most (as on disk, artifact-finder.ts). */
const MAX_CANDIDATES = 20_000;
/** Users whose viewable files' hashes are remembered (the least recently used are forgotten). */
const MAX_USERS = 1000;
/** Tools that write nothing, or publish every file they write (opencode 1.18; verified in its binary for the writers). */
const REPORTING_TOOLS = new Set(["read", "list", "glob", "grep", "webfetch", "websearch", "codesearch", "todowrite", "todoread", "question", "skill", "lsp", "invalid", "write", "edit", "apply_patch"]);

/** Workspace-relative path → sha256 of its content, for the viewable files read. */
export type Hashes = Map<string, string>;

/** The hashes each user's viewable files had when their last turn ended (this process only). */
export class ViewableMemory {
  private readonly users = new Map<string, Hashes>();

  get(user: string): Hashes | undefined {
    const hashes = this.users.get(user);
    if (hashes) this.set(user, hashes);
    return hashes;
  }

  set(user: string, hashes: Hashes): void {
    this.users.delete(user);
    this.users.set(user, hashes);
    if (this.users.size > MAX_USERS) this.users.delete(this.users.keys().next().value!);
  }
}

export interface TurnChangesOptions {
  user: string;
  filter: SyncFilter;
  memory: ViewableMemory;
  maxBytes: number;
}

export class TurnChanges {
  /** Paths the turn's tools wrote, in the order of their last writes (Map order). */
  private readonly written = new Map<string, true>();
  /** A tool ran that may write without an event (a shell…): contents must be compared. */
  private unreported = false;
  private readonly stop: () => void;
  private readonly before: Promise<Hashes>;

  constructor(
    ep: RunnerEndpoint,
    private readonly files: WorkspaceFiles,
    private readonly opts: TurnChangesOptions,
  ) {
    const root = ep.directory.replace(/\/+$/, "");
    this.stop = ep.events.watch((event, directory) => {
      // Any session in the directory counts (a subagent's runs in its own session).
      const ours = !directory || directory.replace(/\/+$/, "") === root;
      if (ours && event.type === "message.part.updated" && event.part.type === "tool" && !REPORTING_TOOLS.has(event.part.tool)) this.unreported = true;
      const change = fileChange(ep.directory, event);
      if (!change) return;
      this.written.delete(change.rel);
      if (change.op === "upsert") this.written.set(change.rel, true);
    });
    const known = opts.memory.get(opts.user);
    // Not awaited: read while the agent's first steps run (a failure: everything counts as
    // new). Remembered at once: a turn that ends without looking (no tool ran) changed nothing.
    this.before = known
      ? Promise.resolve(known)
      : this.hashes(Infinity).then(
          (hashes) => {
            if (!opts.memory.get(opts.user)) opts.memory.set(opts.user, hashes);
            return hashes;
          },
          () => new Map(),
        );
  }

  /**
   * The viewable paths changed since the turn began: what its tools wrote first, then (see
   * above) the rest in listing order; and how they were found.
   */
  async changed(deadline: number): Promise<{ paths: string[]; by: "events" | "contents" }> {
    const byTools = [...this.written.keys()].filter(viewableByName);
    const before = await this.before;
    if (!this.unreported) {
      // The memory learns what the tools wrote (read again at once: their bytes are kept next).
      const now = new Map(before);
      for (const rel of byTools) now.delete(rel);
      for (const [rel, h] of await contentHashes(this.files, byTools, this.opts.maxBytes, deadline)) now.set(rel, h);
      this.opts.memory.set(this.opts.user, now);
      return { paths: byTools, by: "events" };
    }
    const now = await this.hashes(deadline);
    this.opts.memory.set(this.opts.user, now);
    const changed = [...now.keys()].filter((rel) => now.get(rel) !== before.get(rel));
    return { paths: [...new Set([...byTools.filter((rel) => now.has(rel)), ...changed])], by: "contents" };
  }

  close(): void {
    this.stop();
  }

  /** The hashes of the viewable files now (those read before the deadline). */
  private async hashes(deadline: number): Promise<Hashes> {
    const candidates = await this.opts.filter.list(this.files, MAX_CANDIDATES, viewableByName);
    return contentHashes(this.files, candidates, this.opts.maxBytes, deadline);
  }
}
