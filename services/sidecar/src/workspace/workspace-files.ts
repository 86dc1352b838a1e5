/**
 * One user's workspace as the sidecar reads it (knowledge-base sync, artifacts), through one
 * of two backends chosen at boot (WORKSPACE_READS, or the runner mode's own `workspaceReads`):
 * - disk (disk-workspace-files.ts): the sidecar's own filesystem, when the runner shares it
 *   (local, docker and shared modes). Kept there because the kernel gives more: a stat with
 *   ctime (what a turn changed, whatever wrote it) and O_NOFOLLOW reads;
 * - runner (runner-workspace-files.ts): opencode's own file API on the user's runner, when
 *   the workspace is a volume on whichever node runs it (swarm mode). No stat: what changed
 *   comes from the runner's file events, and a read is the only way to know a file.
 * The rules of what may leave a workspace (sync/sync-filter.ts `admit`) are the same for
 * both: they are written once, against this interface.
 */
import type { RunnerEndpoint, WorkspaceReads } from "../runners/runner.js";
import type { ReadInside } from "./read-inside.js";
import type { UserSpace } from "./user-space.js";

export interface DirEntry {
  name: string;
  /** A directory (walked into); anything else listed is a file candidate. */
  dir: boolean;
}

/** What a stat tells of a file inside the workspace (symlinks resolved). */
export interface FileFacts {
  size: number;
  mtimeMs: number;
  /** Set by the kernel on every write, create or rename; no tool can set it back. */
  ctimeMs: number;
}

export type Looked = ({ ok: true } & FileFacts) | { ok: false; reason: string };

export interface WorkspaceFiles {
  readonly reads: WorkspaceReads;
  /** Which workspace this is, through which backend (a key for what is remembered of it). */
  readonly id: string;
  /** A directory's direct children (workspace-relative, "" the root); [] when it is none. */
  list(dirRel: string): Promise<DirEntry[]>;
  /**
   * The regular file `rel` resolves to inside the workspace, without reading it; undefined
   * where the backend has no stat (runner): then the read decides.
   */
  look(rel: string): Promise<Looked | undefined>;
  /** The bytes of the regular file `rel` inside the workspace, at most `maxBytes`, or why not. */
  read(rel: string, maxBytes: number): Promise<ReadInside>;
}

export interface Workspaces {
  readonly reads: WorkspaceReads;
  /**
   * A user's workspace files. `ep`: the runner endpoint a turn holds. Without it, the runner
   * backend uses the endpoint this process holds ready now, if any (Runner.current): undefined
   * means "not readable now", and a background reader defers (it never wakes a runner).
   */
  files(space: UserSpace, ep?: RunnerEndpoint): WorkspaceFiles | undefined;
}
