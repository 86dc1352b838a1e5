/**
 * The content hashes of many workspace files, read a few at a time: what stands in for a
 * stat where the reader has none (the runner backend), to tell which files changed.
 */
import { createHash } from "node:crypto";
import type { WorkspaceFiles } from "./workspace-files.js";

/** Reads in flight at once through one reader. */
const READS_IN_FLIGHT = 8;

/** Path → sha256 (hex) of each of `rels` that could be read (within `maxBytes`) before `deadline`, in the order of `rels`. */
export async function contentHashes(files: WorkspaceFiles, rels: string[], maxBytes: number, deadline = Infinity): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  let next = 0;
  const worker = async () => {
    while (next < rels.length && Date.now() < deadline) {
      const rel = rels[next++]!;
      const file = await files.read(rel, maxBytes);
      if (file.ok) found.set(rel, sha256(file.bytes));
    }
  };
  await Promise.all(Array.from({ length: READS_IN_FLIGHT }, worker));
  return new Map(rels.filter((rel) => found.has(rel)).map((rel) => [rel, found.get(rel)!]));
}

export function sha256(bytes: Buffer): string {
  return createHash("sha256").update(bytes).digest("hex");
}
