/**
 * The two ways the sidecar reads a workspace, on the same directory: its own disk, and a real
 * `opencode serve` (the runner backend: opencode's `/file` listing and its raw read route).
 * Listing, the workspace rules through the runner, exact bytes whatever the encoding, and
 * what the runner refuses (traversal, symlinks out, directories, FIFOs) as "not admitted".
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SyncFilter } from "../../src/sync/sync-filter.js";
import type { WorkspaceFiles } from "../../src/workspace/workspace-files.js";
import { tempDir } from "../helpers/harness.js";
import { startBackends, type Backends } from "../helpers/runner-files.js";
import { minimalPdf, solidPng } from "../helpers/sample-files.js";

let backends: Backends;
let ws: string;
let runner: WorkspaceFiles;
let disk: WorkspaceFiles;

/** Bytes a decoder would change: every byte value, text with edge whitespace, Latin-1, a BOM. */
const BYTES: Record<string, Buffer> = {
  "all-bytes.bin": Buffer.from(Array.from({ length: 512 }, (_, i) => i % 256)),
  "random.dat": randomBytes(100_000),
  "chart.png": solidPng(16, 8, [200, 30, 30]),
  "doc.pdf": minimalPdf(),
  "page.html": Buffer.from("  \n<!doctype html><p>ends with a newline</p>\n\n"),
  "latin1.txt": Buffer.from("caf\xe9 cr\xe8me\n", "latin1"),
  "bom.txt": Buffer.from("\ufeffwith a byte order mark\n"),
  "dir with spaces/n%20ame #1?.html": Buffer.from("<p>odd name</p>"),
  "ünïcode/ファイル.svg": Buffer.from("<svg xmlns='http://www.w3.org/2000/svg'/>"),
};

beforeAll(async () => {
  const root = tempDir("op-wsfiles-");
  ws = path.join(root, "ws");
  fs.mkdirSync(ws);
  fs.writeFileSync(path.join(root, "outside.txt"), "outside the workspace");
  for (const [rel, bytes] of Object.entries(BYTES)) {
    fs.mkdirSync(path.dirname(path.join(ws, rel)), { recursive: true });
    fs.writeFileSync(path.join(ws, rel), bytes);
  }
  fs.mkdirSync(path.join(ws, "sub/deep"), { recursive: true });
  fs.writeFileSync(path.join(ws, "sub/deep/b.md"), "b");
  fs.writeFileSync(path.join(ws, ".gitignore"), "build/\n*.log\n");
  fs.mkdirSync(path.join(ws, "build"));
  fs.writeFileSync(path.join(ws, "build/out.html"), "<p>built</p>");
  fs.writeFileSync(path.join(ws, "sub/trace.log"), "log");
  fs.writeFileSync(path.join(ws, "sub/.gitignore"), "deep/\n");
  fs.writeFileSync(path.join(ws, "big.txt"), "x".repeat(5000));
  fs.symlinkSync("/etc/hostname", path.join(ws, "leak.html"));
  fs.symlinkSync(path.join(root, "outside.txt"), path.join(ws, "leak2.txt"));
  fs.symlinkSync("/etc", path.join(ws, "etc"));
  fs.symlinkSync("page.html", path.join(ws, "inside-link.html"));
  execFileSync("mkfifo", [path.join(ws, "fifo.html")]);
  backends = await startBackends();
  ({ disk, runner } = backends.of(ws));
}, 90_000);
afterAll(() => backends?.close());

describe("listing through the runner", () => {
  it("lists a directory's files and directories (not symlinks or FIFOs); nothing for a path that is not a directory inside", async () => {
    const names = (await runner.list("")).map((e) => `${e.name}${e.dir ? "/" : ""}`).sort();
    expect(names).toEqual([".gitignore", "all-bytes.bin", "big.txt", "bom.txt", "build/", "chart.png", "dir with spaces/", "doc.pdf", "latin1.txt", "page.html", "random.dat", "sub/", "ünïcode/"].sort());
    expect(await runner.list("sub")).toEqual(expect.arrayContaining([{ name: "deep", dir: true }, { name: "trace.log", dir: false }]));
    // Refused by opencode (500), never an error: a symlinked directory out, `..`, a file, nothing.
    for (const dir of ["etc", "..", "../..", "page.html", "missing"]) expect(await runner.list(dir), dir).toEqual([]);
  });

  it("the workspace rules walk it as they walk the disk: directories a .gitignore at any level matches are not entered", async () => {
    const filter = new SyncFilter({ maxBytes: 1000, allowHtml: true });
    const viaRunner = (await filter.list(runner)).sort();
    expect(viaRunner).toEqual(expect.arrayContaining(["page.html", "dir with spaces/n%20ame #1?.html", "ünïcode/ファイル.svg"]));
    for (const hidden of ["build/out.html", "sub/deep/b.md"]) expect(viaRunner).not.toContain(hidden);
    // The same as on disk, but for the symlinks (candidates on disk, resolved by `admit`; opencode does not list them).
    const onDisk = (await filter.list(disk)).filter((p) => !["leak.html", "leak2.txt", "inside-link.html", "etc"].includes(p)).sort();
    expect(viaRunner).toEqual(onDisk);
  });
});

describe("reading through the runner", () => {
  it.each(Object.keys(BYTES))("%s arrives byte for byte", async (rel) => {
    const got = await runner.read(rel, 1_000_000);
    expect(got.ok).toBe(true);
    expect(got.ok && got.bytes.equals(BYTES[rel]!)).toBe(true);
    expect(got.ok && got.size).toBe(BYTES[rel]!.length);
  });

  it("a symlink inside to a file inside is read, as on disk", async () => {
    const got = await runner.read("inside-link.html", 1000);
    expect(got.ok && got.bytes.equals(BYTES["page.html"]!)).toBe(true);
  });

  it.each([
    ["leak.html", "a symlink to /etc/hostname"],
    ["leak2.txt", "a symlink to a file beside the workspace"],
    ["etc/hostname", "a path through a symlinked directory"],
    ["../outside.txt", "a `..` traversal"],
    ["sub/../../outside.txt", "a `..` traversal inside a path"],
    ["/etc/hostname", "an absolute path"],
    ["sub", "a directory"],
    ["fifo.html", "a FIFO (never blocks)"],
    ["missing.txt", "nothing"],
  ])("%s (%s) is not admitted, and is no error", async (rel) => {
    const got = await runner.read(rel, 1_000_000);
    expect(got.ok).toBe(false);
  });

  it("opencode itself refuses what resolves outside, however the path is spelled", async () => {
    const { client, directory } = backends.endpoint(ws);
    // Past our own guard: straight at the client's route with the path encoded.
    for (const rel of ["leak.html", "etc/hostname", "%2e%2e/outside.txt"]) expect((await client.readFile(directory, rel, 1000)).ok, rel).toBe(false);
    expect((await client.readFile(directory, "../outside.txt", 1000)).ok).toBe(false);
    expect(await client.listFiles(directory, "../")).toBeUndefined();
  });

  it("a file over the cap is refused as a whole", async () => {
    expect(await runner.read("big.txt", 4999)).toEqual({ ok: false, reason: "larger than 4999 bytes" });
    expect((await runner.read("big.txt", 5000)).ok).toBe(true);
  });

  it("the workspace rules hold through the runner: secrets, ignored paths, empty files never admitted", async () => {
    const filter = new SyncFilter({ maxBytes: 1000, allowHtml: true });
    fs.writeFileSync(path.join(ws, ".env"), "KEY=1");
    fs.writeFileSync(path.join(ws, "empty.html"), "");
    for (const rel of [".env", "build/out.html", "sub/deep/b.md", "sub/trace.log", "empty.html", "leak.html"]) {
      expect((await filter.admitted(runner, rel, 1000)).ok, rel).toBe(false);
    }
    expect((await filter.admitted(runner, "page.html", 1000)).ok).toBe(true);
  });
});
