import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SyncFilter } from "../../src/sync/sync-filter.js";
import type { WorkspaceFiles } from "../../src/workspace/workspace-files.js";
import { startBackends, type Backends } from "../helpers/runner-files.js";

let ws: string;
let outside: string;
let backends: Backends;
const files: Partial<Record<"disk" | "runner", WorkspaceFiles>> = {};
const filter = new SyncFilter({ maxBytes: 100, allowHtml: false });

function write(rel: string, content = "x") {
  const p = path.join(ws, rel);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, content);
}

beforeAll(async () => {
  ws = fs.mkdtempSync(path.join(os.tmpdir(), "op-filter-"));
  outside = fs.mkdtempSync(path.join(os.tmpdir(), "op-outside-"));
  fs.writeFileSync(path.join(outside, "secret.txt"), "outside");
  write("src/app.ts");
  write("README.md");
  write(".env", "KEY=1");
  write("config/.env.production", "KEY=2");
  write("certs/server.pem");
  write(".ssh/id_ed25519");
  write("gcp-credentials.json");
  write(".git/config");
  write("node_modules/x/index.js");
  write("build/out.js");
  write("logs/a.log");
  write("logs/keep.log");
  write(".gitignore", "build/\n*.log\n!keep.log\n");
  write("pkg/.gitignore", "generated.txt\n");
  write("pkg/generated.txt");
  write("pkg/real.txt");
  write("big.bin", "y".repeat(101));
  write("page.html", "<script>");
  write("empty.txt", "");
  write("logo.png", "\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
  write("tool.bin", "\x7fELF\x02\x01\x01\0");
  write("report.pdf", "%PDF-1.4\n\0binary body");
  write("latin1.txt", Buffer.from("caf\xe9 au lait", "latin1").toString("latin1"));
  fs.symlinkSync(path.join(outside, "secret.txt"), path.join(ws, "escape.txt"));
  fs.symlinkSync(path.join(ws, "README.md"), path.join(ws, "inside-link.md"));
  backends = await startBackends();
  Object.assign(files, backends.of(ws));
}, 90_000);
afterAll(() => backends?.close());

// The same rules whichever way the workspace is read: on disk, and through a real opencode.
describe.each(["disk", "runner"] as const)("SyncFilter (%s reads)", (reads) => {
  // What the knowledge base takes for good (through the runner, size, emptiness and binaries
  // are known only from the bytes).
  const verdict = async (rel: string) => {
    const taken = await filter.take(files[reads]!, rel);
    return taken.ok ? { sync: true as const, bytes: taken.bytes } : { sync: false as const, reason: taken.reason };
  };

  it.each(["src/app.ts", "README.md", "logs/keep.log", "pkg/real.txt", "inside-link.md", "report.pdf", "latin1.txt"])("syncs %s", async (rel) => {
    const v = await verdict(rel);
    expect(v.sync).toBe(true);
    expect(v.sync && v.bytes.equals(fs.readFileSync(path.join(ws, rel)))).toBe(true);
  });

  it.each([
    [".env", "secret"],
    ["config/.env.production", "secret"],
    ["certs/server.pem", "secret"],
    [".ssh/id_ed25519", "secret"],
    ["gcp-credentials.json", "secret"],
    [".git/config", "VCS"],
    ["node_modules/x/index.js", "VCS"],
    ["build/out.js", ".gitignore"],
    ["logs/a.log", ".gitignore"],
    ["pkg/generated.txt", ".gitignore"],
    ["big.bin", "larger"],
    ["page.html", "HTML"],
    ["empty.txt", "empty"],
    ["logo.png", "binary"],
    ["tool.bin", "binary"],
    ["escape.txt", "outside"],
    ["missing.txt", "gone"],
  ])("never syncs %s (%s)", async (rel, why) => {
    const v = await verdict(rel);
    expect(v.sync).toBe(false);
    expect(v.sync === false && v.reason).toMatch(new RegExp(why, "i"));
  });

  it("lists candidates without descending into excluded directories", async () => {
    const all = await filter.list(files[reads]!);
    expect(all).toContain("src/app.ts");
    expect(all.some((p) => p.startsWith(".git/") || p.startsWith("node_modules/") || p.startsWith("build/"))).toBe(false);
  });

  it("maps only paths inside the workspace", () => {
    expect(filter.relative(ws, path.join(ws, "a/b.txt"))).toBe("a/b.txt");
    expect(filter.relative(ws, path.join(ws, "..", "x"))).toBeUndefined();
    expect(filter.relative(ws, ws)).toBeUndefined();
  });

  it("checks a binary again once it changed", async () => {
    write("changing.dat", "\0binary");
    expect((await verdict("changing.dat")).sync).toBe(false);
    expect((await verdict("changing.dat")).sync).toBe(false);
    write("changing.dat", "now it is text");
    expect((await verdict("changing.dat")).sync).toBe(true);
  });

  it("allows HTML when told to", async () => {
    expect((await new SyncFilter({ maxBytes: 100, allowHtml: true }).take(files[reads]!, "page.html")).ok).toBe(true);
  });
});
