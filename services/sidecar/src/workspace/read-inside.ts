/**
 * Reading a file out of a workspace the agent can change at any moment: between a path's
 * check and its read, the agent may swap a file for a symlink to somewhere else. So the file
 * is opened without following a final symlink (and without blocking on a FIFO), and accepted
 * only if what was opened really lies inside the workspace (the kernel's own path for the
 * open descriptor) and is a regular file no larger than asked.
 */
import { constants } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";

export interface InsideFile {
  bytes: Buffer;
  size: number;
  mtimeMs: number;
}

/** The file's bytes, or why they are not handed out. */
export type ReadInside = ({ ok: true } & InsideFile) | { ok: false; reason: string };

export async function readInside(workspace: string, file: string, maxBytes: number): Promise<ReadInside> {
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return { ok: false, reason: code === "ELOOP" ? "a symlink" : "gone" };
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) return { ok: false, reason: "not a regular file" };
    if (st.size > maxBytes) return { ok: false, reason: `larger than ${maxBytes} bytes` };
    const [opened, root] = await Promise.all([fs.readlink(`/proc/self/fd/${fh.fd}`).catch(() => undefined), fs.realpath(workspace)]);
    if (opened !== undefined && !isBelow(opened, root)) return { ok: false, reason: "resolves outside the workspace" };
    const bytes = await fh.readFile();
    // Grown past the cap while we read it: refused as a whole.
    if (bytes.length > maxBytes) return { ok: false, reason: `larger than ${maxBytes} bytes` };
    return { ok: true, bytes, size: bytes.length, mtimeMs: st.mtimeMs };
  } finally {
    await fh.close();
  }
}

export function isBelow(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel !== "" && rel !== ".." && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel);
}
