import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { artifactUrl, linksMarkdown, openWebUIArtifacts } from "../../src/artifacts/artifact-links.js";
import { viewableType } from "../../src/artifacts/artifact-kinds.js";
import { ArtifactService, type Artifact } from "../../src/artifacts/artifact-service.js";
import { FileArtifactStore } from "../../src/artifacts/artifact-store.js";
import { ArtifactSigner, type ArtifactClaim } from "../../src/artifacts/artifact-token.js";
import { GoneError, NotFoundError } from "../../src/errors/api-error.js";
import { SyncFilter } from "../../src/sync/sync-filter.js";
import { readInside } from "../../src/workspace/read-inside.js";
import { userSpace } from "../../src/workspace/user-space.js";
import { tempDir } from "../helpers/harness.js";
import { minimalPdf, solidPng } from "../helpers/sample-files.js";

const KEY = "k".repeat(32);
const NOW_S = 1_800_000_000;
const CLAIM: ArtifactClaim = { user: "0123456789abcdef", path: "out/page.html", sha256: "a".repeat(64), contentType: "text/html; charset=utf-8", expiresAt: NOW_S + 60 };
const silent = pino({ level: "silent" });

describe("ArtifactSigner", () => {
  const signer = new ArtifactSigner(KEY);

  it("verifies what it signed, until the expiry", () => {
    const token = signer.sign(CLAIM);
    expect(signer.verify(token, NOW_S)).toEqual({ ok: true, claim: CLAIM });
    expect(signer.verify(token, NOW_S + 60)).toEqual({ ok: true, claim: CLAIM });
    expect(signer.verify(token, NOW_S + 61)).toEqual({ ok: false, why: "expired" });
  });

  it("refuses a changed claim, a changed signature, another key and garbage", () => {
    const token = signer.sign(CLAIM);
    const [body, mac] = token.split(".") as [string, string];
    const changed = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(body, "base64url").toString()), u: "fedcba9876543210" })).toString("base64url");
    const bad = [`${changed}.${mac}`, `${body}.${mac.slice(0, -1)}`, `${body}.`, new ArtifactSigner("x".repeat(32)).sign(CLAIM), "", ".", "abc", `${body}`];
    for (const t of bad) expect(signer.verify(t, NOW_S), t).toEqual({ ok: false, why: "invalid" });
  });

  it("refuses a claim it signed that could not be a file address (defence in depth)", () => {
    for (const claim of [{ ...CLAIM, user: "../../etc" }, { ...CLAIM, sha256: "../x" }]) {
      expect(signer.verify(signer.sign(claim), NOW_S)).toEqual({ ok: false, why: "invalid" });
    }
  });

  it("needs a key of at least 16 characters", () => {
    expect(() => new ArtifactSigner("short")).toThrow(/16/);
  });
});

describe("viewableType: the name proposes, the bytes decide", () => {
  const png = solidPng(2, 2, [0, 0, 0]);
  const jpeg = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 0x4a, 0x46, 0x49, 0x46]);
  it.each([
    ["a.html", Buffer.from("<p>hi</p>"), "text/html; charset=utf-8"],
    ["A.HTM", Buffer.from("plain text is a page too"), "text/html; charset=utf-8"],
    ["c.svg", Buffer.from('<?xml version="1.0"?>\n<!-- chart -->\n<svg xmlns="http://www.w3.org/2000/svg"/>'), "image/svg+xml"],
    ["d.png", png, "image/png"],
    ["photo.png", jpeg, "image/jpeg"], // served as what it is
    ["e.pdf", minimalPdf(), "application/pdf"],
  ])("%s is shown as %s", (name, bytes, type) => {
    expect(viewableType(name, bytes)?.contentType).toBe(type);
  });
  it.each([
    ["binary.html", Buffer.from([0x3c, 0x70, 0, 0x3e])],
    ["no-root.svg", Buffer.from("<html><body>not an svg</body></html>")],
    ["text.png", Buffer.from("not an image")],
    ["fake.pdf", Buffer.from("%PD nope")],
    ["notes.txt", Buffer.from("text")],
    ["script.js", Buffer.from("alert(1)")],
  ])("%s is not shown", (name, bytes) => {
    expect(viewableType(name, bytes)).toBeUndefined();
  });
});

const artifact = (over: Partial<Artifact>): Artifact => ({
  name: over.path ?? "page.html",
  path: over.name ?? "page.html",
  kind: "html",
  contentType: "text/html; charset=utf-8",
  size: 1,
  sha256: "a".repeat(64),
  token: "T0K.EN",
  ...over,
});

describe("links", () => {
  it("percent-encodes the name, brackets included (a ')' would end a markdown link)", () => {
    expect(artifactUrl("http://s", artifact({ name: "my plot (1)!.png" }))).toBe("http://s/v1/artifacts/T0K.EN/my%20plot%20%281%29%21.png");
  });

  it("lists links in markdown with the agent's names escaped, and points each span at its link", () => {
    const items = [artifact({}), artifact({ name: "x](javascript:alert(1)).svg", path: "d/x](javascript:alert(1)).svg", kind: "svg" }), artifact({ name: "n\n# h.pdf", path: "n\n# h.pdf", kind: "pdf" })];
    const { text, links } = linksMarkdown(items, 3, "http://s");
    const lines = text.split("\n");
    expect(lines.slice(0, 3)).toEqual(["", "", "**Files from this turn**"]);
    expect(lines[3]).toBe("- [page.html](http://s/v1/artifacts/T0K.EN/page.html) (web page)");
    expect(lines[4]).toBe("- [d/x\\]\\(javascript:alert\\(1\\)\\).svg](http://s/v1/artifacts/T0K.EN/x%5D%28javascript%3Aalert%281%29%29.svg) (SVG image)");
    expect(lines[5]).toBe("- [n \\# h.pdf](http://s/v1/artifacts/T0K.EN/n%0A%23%20h.pdf) (PDF)");
    expect(lines[6]).toBe("- …and 3 more files from this turn, not shown");
    for (const l of links) expect(text.slice(l.start, l.end)).toBe(`[${text.slice(l.start + 1).split("](")[0]}](${l.url})`);
    expect(linksMarkdown([], 1, "http://s").text).toContain("…and 1 more file from this turn");
    expect(linksMarkdown([], 0, "http://s")).toEqual({ text: "", links: [] });
  });

  it("gives Open WebUI pages as embeds (sizing themselves), images and SVGs inline, PDFs and the rest as links", () => {
    const items = [artifact({}), artifact({ name: "c.svg", kind: "svg" }), artifact({ name: "d [x].png", kind: "image" }), artifact({ name: "e.pdf", kind: "pdf" })];
    const { events, text } = openWebUIArtifacts({ items, more: 2 }, "http://s");
    expect(events).toEqual([{ type: "embeds", data: { embeds: ["http://s/v1/artifacts/T0K.EN/page.html?embed=1"] } }]);
    expect(text).toBe(
      "\n\n![c.svg](http://s/v1/artifacts/T0K.EN/c.svg)" +
        "\n\n![d \\[x\\].png](http://s/v1/artifacts/T0K.EN/d%20%5Bx%5D.png)" +
        "\n\n**Files from this turn**\n- [e.pdf](http://s/v1/artifacts/T0K.EN/e.pdf) (PDF)\n- …and 2 more files from this turn, not shown\n",
    );
  });
});

describe("readInside: a file the agent may swap while it is read", () => {
  it("reads a regular file inside, refuses a symlink, a FIFO, a path through a symlinked directory, and a file over the cap", async () => {
    const root = tempDir();
    const ws = path.join(root, "ws");
    const outside = path.join(root, "outside");
    fs.mkdirSync(ws);
    fs.mkdirSync(outside);
    fs.writeFileSync(path.join(outside, "secret.html"), "secret");
    fs.writeFileSync(path.join(ws, "ok.html"), "fine");
    fs.symlinkSync(path.join(outside, "secret.html"), path.join(ws, "link.html"));
    fs.symlinkSync(outside, path.join(ws, "dir"));
    execFileSync("mkfifo", [path.join(ws, "fifo.html")]);
    expect(await readInside(ws, path.join(ws, "ok.html"), 100)).toMatchObject({ ok: true, size: 4 });
    expect(await readInside(ws, path.join(ws, "link.html"), 100)).toEqual({ ok: false, reason: "a symlink" });
    expect(await readInside(ws, path.join(ws, "dir/secret.html"), 100)).toEqual({ ok: false, reason: "resolves outside the workspace" });
    expect(await readInside(ws, path.join(ws, "fifo.html"), 100)).toEqual({ ok: false, reason: "not a regular file" });
    expect(await readInside(ws, path.join(ws, "ok.html"), 3)).toEqual({ ok: false, reason: "larger than 3 bytes" });
  });
});

describe("ArtifactService", () => {
  function setup(maxPerTurn = 3) {
    const root = tempDir();
    const stateRoot = path.join(root, "state");
    const space = userSpace(path.join(root, "ws"), stateRoot, "0123456789abcdef");
    fs.mkdirSync(space.workspaceDir, { recursive: true });
    const store = new FileArtifactStore(stateRoot);
    const service = new ArtifactService({
      filter: new SyncFilter({ maxBytes: 1000, allowHtml: true }),
      store,
      signingKey: async () => KEY,
      maxBytes: 1000,
      maxPerTurn,
      ttlS: 60,
      collectTimeoutMs: 10_000,
      log: silent,
    });
    const put = (rel: string, content: string | Buffer, mtime?: Date) => {
      const file = path.join(space.workspaceDir, rel);
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(file, content);
      if (mtime) fs.utimesSync(file, mtime, mtime);
    };
    return { space, store, service, put, stateRoot };
  }

  it("shows the viewable files changed since the turn began, in the order they were written, and keeps their bytes", async () => {
    const { space, store, service, put } = setup();
    put("old.html", "<p>before the turn</p>");
    await new Promise((r) => setTimeout(r, 120));
    const since = Date.now();
    put("b.svg", "<svg/>", new Date(since + 2000));
    put("a.html", "<p>a</p>", new Date(since + 1000));
    put("notes.txt", "not viewable");
    put(".env.html", "secret by name");
    put("fake.png", "not a png");
    const found = await service.collect(space, since, silent);
    expect(found.more).toBe(0);
    expect(found.items.map((a) => [a.path, a.kind])).toEqual([
      ["a.html", "html"],
      ["b.svg", "svg"],
    ]);
    const [a] = found.items;
    expect(a!.sha256).toBe(createHash("sha256").update("<p>a</p>").digest("hex"));
    expect(fs.readFileSync(store.file(space.hash, a!.sha256), "utf8")).toBe("<p>a</p>");
    const opened = await service.open(a!.token, "a.html");
    expect(opened).toMatchObject({ name: "a.html", contentType: "text/html; charset=utf-8" });
    expect(opened.bytes.toString()).toBe("<p>a</p>");
    expect(opened.maxAgeS).toBeGreaterThan(50);
    await expect(service.open(a!.token, "b.svg")).rejects.toBeInstanceOf(NotFoundError);
  });

  it("a file touched back into the past (cp -p, tar) still counts: ctime cannot be set back", async () => {
    const { space, service, put } = setup();
    const since = Date.now();
    put("restored.html", "<p>old mtime</p>", new Date(2000, 0, 1));
    expect((await service.collect(space, since, silent)).items.map((a) => a.path)).toEqual(["restored.html"]);
  });

  it("caps the turn and counts the rest", async () => {
    const { space, service, put } = setup(3);
    const since = Date.now();
    for (let i = 0; i < 5; i++) put(`p${i}.html`, `<p>${i}</p>`, new Date(since + 1000 + i));
    const found = await service.collect(space, since, silent);
    expect(found.items.map((a) => a.path)).toEqual(["p0.html", "p1.html", "p2.html"]);
    expect(found.more).toBe(2);
  });

  it("an expired link is gone (410); the store prunes versions no link can reach", async () => {
    const { space, store, service, put, stateRoot } = setup();
    const since = Date.now();
    put("a.html", "<p>a</p>");
    const [a] = (await service.collect(space, since, silent)).items;
    const signer = new ArtifactSigner(KEY);
    const expired = signer.sign({ user: space.hash, path: "a.html", sha256: a!.sha256, contentType: a!.contentType, expiresAt: Math.floor(Date.now() / 1000) - 1 });
    await expect(service.open(expired, "a.html")).rejects.toBeInstanceOf(GoneError);
    expect(await store.prune(60_000)).toBe(0);
    expect(await store.prune(60_000, Date.now() + 120_000)).toBe(1);
    expect(fs.readdirSync(path.join(stateRoot, "users", space.hash, "artifacts"))).toEqual([]);
    // A live link to a pruned version: gone from the store, a 404.
    await expect(service.open(a!.token, "a.html")).rejects.toMatchObject({ code: "artifact_not_found" });
  });
});
