/**
 * The workspace through the user's runner: opencode's file API on its endpoint, in the
 * directory the runner sees (`/workspace` in a container). Used when the workspace lives on
 * whichever node runs the user's opencode (swarm mode), where the sidecar's disk has no copy.
 *
 * Weaker than the disk in two ways, both written down where they matter: no stat (no size,
 * mtime or ctime before a read: what a turn changed comes from the runner's file events), and
 * the containment check is opencode's (realpath, then a read of the resolved path), not an
 * O_NOFOLLOW open of our own.
 */
import type { Runner, RunnerEndpoint } from "../runners/runner.js";
import type { ReadInside } from "./read-inside.js";
import type { UserSpace } from "./user-space.js";
import type { DirEntry, WorkspaceFiles, Workspaces } from "./workspace-files.js";

export class RunnerWorkspaceFiles implements WorkspaceFiles {
  readonly reads = "runner";

  constructor(private readonly ep: RunnerEndpoint) {}

  get id(): string {
    return `${this.ep.client.baseUrl} ${this.ep.directory}`;
  }

  async list(dirRel: string): Promise<DirEntry[]> {
    const nodes = await this.ep.client.listFiles(this.ep.directory, dirRel);
    return (nodes ?? []).map((n) => ({ name: n.name, dir: n.type === "directory" }));
  }

  /** No stat through opencode: the read decides. */
  async look(): Promise<undefined> {
    return undefined;
  }

  async read(rel: string, maxBytes: number): Promise<ReadInside> {
    const got = await this.ep.client.readFile(this.ep.directory, rel, maxBytes);
    if (!got.ok) return got;
    // No mtime through the runner: 0 (the manifest's size+mtime shortcut is a disk one).
    return { ok: true, bytes: got.bytes, size: got.bytes.length, mtimeMs: 0 };
  }
}

/** Reads through the user's runner: the turn's endpoint, else the one this process holds now (never woken). */
export function runnerWorkspaces(runner: Pick<Runner, "current">): Workspaces {
  return {
    reads: "runner",
    files: (space: UserSpace, ep?: RunnerEndpoint) => {
      const endpoint = ep ?? runner.current(space);
      return endpoint && new RunnerWorkspaceFiles(endpoint);
    },
  };
}
