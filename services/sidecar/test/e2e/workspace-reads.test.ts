/**
 * WORKSPACE_READS=runner end to end, with a real opencode (local mode) and the Open WebUI
 * double: the knowledge-base sync and the artifacts read the workspace only through the
 * user's runner (opencode's file API), never the sidecar's disk. Files the agent makes with
 * its write tool and with shell commands are synced (created, changed, deleted) and shown as
 * artifacts with their exact bytes; a symlink to /etc/hostname, a secret and a .gitignored
 * file never leave; while the user's runner is not running, the sync keeps its work queued
 * and delivers it once the runner is back (it never wakes the runner itself).
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { userHash, userSpace } from "../../src/workspace/user-space.js";
import { startOpenWebUIDouble, type OpenWebUIDouble } from "../fixtures/openwebui-double.js";
import { script, startScriptedModel, type ScriptedModel, type Step } from "../fixtures/scripted-model.js";
import { gatewayChat, type GatewayTurn } from "../helpers/gateway-chat.js";
import { scriptedEnv, startSidecar, waitFor, type InProcessSidecar } from "../helpers/harness.js";
import { minimalPdf, solidPng } from "../helpers/sample-files.js";

const GATEWAY_KEY = `gw-${randomUUID()}`;
const ADMIN_KEY = `sk-${randomUUID().replace(/-/g, "")}`;
const ALICE = `alice-${randomUUID().slice(0, 8)}`;

const PAGE = `<!doctype html><html><body><h1>Sales</h1></body></html>\n`;
const PNG = solidPng(16, 8, [200, 30, 30]);
// ASCII ending in a newline: opencode's `/file/content` would hand it back trimmed.
const PDF = minimalPdf();
// Not UTF-8, and no NUL byte: `/file/content` answers 500 for it.
const LATIN1 = Buffer.from("  caf\xe9 cr\xe8me\n", "latin1");

let model: ScriptedModel;
let owui: OpenWebUIDouble;
let sidecar: InProcessSidecar;

const write = (filePath: string, content: string): Step => ({ tool: "write", args: { filePath, content } });
const bash = (command: string): Step => ({ tool: "bash", args: { command, description: "make files" } });
const bytesOf = (b: Buffer) => `printf '%s' '${b.toString("base64")}' | base64 -d`;

const kbFile = (name: string) => owui.kbFiles(`workspace-${ALICE}`).find((f) => f.filename === name);
const kbNames = () => owui.kbFiles(`workspace-${ALICE}`).map((f) => f.filename).sort();
const turn = (content: string): Promise<GatewayTurn> => gatewayChat(sidecar.url, GATEWAY_KEY, ALICE, content);

async function status() {
  const res = await fetch(`${sidecar.url}/v1/sync/status`, { headers: { Authorization: `Bearer ${GATEWAY_KEY}`, "X-OpenWebUI-User-Id": ALICE } });
  return (await res.json()) as { pending: number; last_error: unknown };
}

/** The artifact links of a turn, by file name: Open WebUI's embeds, inline images and listed links. */
function artifactLinks(t: GatewayTurn): Map<string, string> {
  const embeds = t.events.filter((e) => e.type === "embeds").flatMap((e) => e.data.embeds as string[]).map((u) => u.replace(/\?embed=1$/, ""));
  const inText = [...t.text.matchAll(/\]\((http:\/\/127\.0\.0\.1:\d+\/v1\/artifacts\/[^)\s]+)\)/g)].map((m) => m[1]!);
  return new Map([...embeds, ...inText].map((u) => [decodeURIComponent(u.split("/").at(-1)!), u]));
}

async function fetchBytes(url: string): Promise<Buffer> {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  return Buffer.from(await res.arrayBuffer());
}

beforeAll(async () => {
  model = await startScriptedModel();
  owui = await startOpenWebUIDouble({ apiKey: ADMIN_KEY, version: "0.12.0" });
  sidecar = await startSidecar(
    scriptedEnv(model.baseURL, {
      SIDECAR_API_KEYS: GATEWAY_KEY,
      WORKSPACE_READS: "runner",
      OPENWEBUI_URL: owui.url,
      OPENWEBUI_API_KEY: ADMIN_KEY,
      OPENWEBUI_SYNC_DEBOUNCE_MS: "200",
      OPENWEBUI_SYNC_MAX_BACKOFF_MS: "400",
    }),
  );
}, 120_000);
afterAll(async () => {
  await sidecar?.close();
  await owui?.close();
  await model?.close();
});

describe("WORKSPACE_READS=runner", () => {
  let first: GatewayTurn;

  it("the sidecar reads workspaces through the runner", () => {
    expect(sidecar.logs.some((l) => l.includes('"workspaceReads":"runner"'))).toBe(true);
  });

  it("a turn's files (write tool and shell) are shown as artifacts with their exact bytes; nothing else is", async () => {
    first = await turn(
      script(
        write("page.html", PAGE),
        bash(`${bytesOf(PNG)} > dot.png && ${bytesOf(PDF)} > report.pdf && ${bytesOf(LATIN1)} > latin1.txt && printf 'one\n' > shell.md`),
        write("notes.md", "version one\n"),
        // Never leave: a secret by name, an ignored path, a symlink out of the workspace.
        write("secrets.html", "<p>password=hunter2</p>"),
        write(".env", "KEY=hunter2"),
        write(".gitignore", "build/\n"),
        write("build/out.html", "<p>build output</p>"),
        bash("ln -s /etc/hostname leak.html && ln -s /etc/hostname leak.md"),
        { text: "Made a page, an image and a PDF." },
      ),
    );
    expect(first.status).toBe(200);
    expect(first.error).toBeUndefined();
    const links = artifactLinks(first);
    expect([...links.keys()].sort()).toEqual(["dot.png", "page.html", "report.pdf"]);
    expect((await fetchBytes(links.get("page.html")!)).equals(Buffer.from(PAGE))).toBe(true);
    expect((await fetchBytes(links.get("dot.png")!)).equals(PNG)).toBe(true);
    expect((await fetchBytes(links.get("report.pdf")!)).equals(PDF)).toBe(true);
    // Found through the runner's events and read through its API, not the sidecar's disk.
    expect(sidecar.logs.some((l) => l.includes('"reads":"runner"') && l.includes("artifacts collected"))).toBe(true);
  }, 180_000);

  it("its files are synced with their exact bytes; secrets, ignored paths, symlinks out and binaries are not", async () => {
    await waitFor(() => !!kbFile("notes.md") && !!kbFile("report.pdf") && !!kbFile("latin1.txt") && !!kbFile("shell.md"), 20_000, "the turn's files in the KB");
    expect(kbFile("notes.md")!.content.toString()).toBe("version one\n");
    expect(kbFile("report.pdf")!.content.equals(PDF)).toBe(true);
    expect(kbFile("latin1.txt")!.content.equals(LATIN1)).toBe(true);
    await waitFor(async () => (await status()).pending === 0, 10_000, "an empty outbox");
    // HTML is not synced by default, a PNG has no text: neither is in the KB either.
    expect(kbNames()).toEqual([".gitignore", "latin1.txt", "notes.md", "report.pdf", "shell.md"]);
  }, 60_000);

  it("changes (edit tool and shell) and a delete reach the KB; only what the turn changed is shown", async () => {
    const second = await turn(
      script(
        { tool: "edit", args: { filePath: "notes.md", oldString: "version one", newString: "version two" } },
        // No event for a shell's writes: found by content.
        bash(`rm report.pdf && printf '<p>two</p>' > page.html && printf 'two\n' >> shell.md`),
        { text: "changed" },
      ),
    );
    expect(second.error).toBeUndefined();
    const links = artifactLinks(second);
    expect([...links.keys()]).toEqual(["page.html"]);
    expect((await fetchBytes(links.get("page.html")!)).toString()).toBe("<p>two</p>");
    await waitFor(
      () => kbFile("notes.md")?.content.toString() === "version two\n" && kbFile("shell.md")?.content.toString() === "one\ntwo\n" && !kbFile("report.pdf"),
      20_000,
      "the changes and the delete in the KB",
    );
  }, 180_000);

  it("a turn that ran only opencode's writing tools is told by their events, in the order of the writes", async () => {
    const from = sidecar.logs.length;
    const t = await turn(script(write("z.html", "<p>z</p>"), write("a.html", "<p>a</p>"), write("z.html", "<p>z again</p>"), { text: "ok" }));
    const embeds = t.events.filter((e) => e.type === "embeds").flatMap((e) => e.data.embeds as string[]);
    expect(embeds.map((u) => decodeURIComponent(u.replace(/\?embed=1$/, "").split("/").at(-1)!))).toEqual(["a.html", "z.html"]);
    expect((await fetchBytes(embeds[1]!.replace(/\?embed=1$/, ""))).toString()).toBe("<p>z again</p>");
    const collected = sidecar.logs.slice(from).filter((l) => l.includes("artifacts collected"));
    expect(collected).toHaveLength(1);
    expect(collected[0]).toContain('"found":"events"');
    // The turns before ran a shell: theirs were found by content.
    expect(sidecar.logs.slice(0, from).filter((l) => l.includes("artifacts collected")).every((l) => l.includes('"found":"contents"'))).toBe(true);
  }, 180_000);

  it("defers while the user's runner is not running, and delivers once it is back", async () => {
    const space = userSpace(sidecar.config.workspaceRoot, sidecar.config.stateRoot, userHash(ALICE));
    owui.setOutage(503);
    await turn(script(write("later.md", "written before the runner stopped\n"), { text: "ok" }));
    await waitFor(async () => (await status()).last_error !== null && (await status()).pending >= 1, 15_000, "the failed upload to be queued");
    // The idle policy stops it (nothing is in use): the sync must not start it again.
    expect(await sidecar.runner.stopIdle(Date.now() + 3_600_000)).toContain(space.hash);
    expect(sidecar.runner.current(space)).toBeUndefined();
    owui.setOutage(null);
    await new Promise((r) => setTimeout(r, 4000));
    expect(kbFile("later.md")).toBeUndefined();
    expect((await status()).pending).toBeGreaterThanOrEqual(1);
    expect(sidecar.runner.current(space)).toBeUndefined();
    expect(await sidecar.runner.state(space)).toBe("idle-stopped");
    expect(sidecar.logs.some((l) => l.includes("sync deferred"))).toBe(true);
    // The user's next turn brings the runner back: what waited is sent.
    await turn(script({ text: "hello again" }));
    await waitFor(() => kbFile("later.md")?.content.toString() === "written before the runner stopped\n", 20_000, "later.md in the KB");
    await waitFor(async () => (await status()).pending === 0, 10_000, "an empty outbox");
  }, 180_000);
});
