/**
 * A runner's file events, as changes to one workspace: opencode reports `file.edited` (its
 * edit and write tools) and `file.watcher.updated` (any writer, a shell command included)
 * with the absolute path in the runner's view, and no session id: they are attributed by
 * directory (local mode shares one event stream between users).
 */
import type { OpencodeEvent } from "../opencode/events.js";

export interface FileChange {
  rel: string;
  op: "upsert" | "delete";
}

/** The change `event` makes to the workspace the runner sees at `directory`, if it is one. */
export function fileChange(directory: string, event: OpencodeEvent): FileChange | undefined {
  if (event.type !== "file.edited" && event.type !== "file.watcher.updated") return undefined;
  const root = directory.replace(/\/+$/, "");
  if (!event.file.startsWith(`${root}/`)) return undefined;
  const rel = event.file.slice(root.length + 1);
  return { rel, op: event.type === "file.watcher.updated" && event.event === "unlink" ? "delete" : "upsert" };
}
