/**
 * One temporary directory per test run (TMPDIR for the workers and everything they start),
 * removed when the run ends: the suite starts hundreds of sidecars, and a sandboxed user's
 * opencode dir alone holds ~95 MB (its plugin package and npm cache).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export default function setup(): () => void {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "op-run-"));
  process.env.TMPDIR = root;
  return () => {
    try {
      fs.rmSync(root, { recursive: true, force: true });
    } catch (e) {
      console.warn(`could not remove ${root}: ${(e as Error).message}`);
    }
  };
}
