/**
 * Knowledge-base sync from two sidecar replicas over one real `opencode serve`
 * (RUNNER_MODE=shared), into the real Open WebUI, with their state in PostgreSQL. Both
 * replicas watch the same opencode event stream, so both hear of every file change: the
 * shared outbox must still upload each change once, create the user's KB once, answer the
 * same status on either replica, and let one replica finish what a killed one left.
 *
 * `SYNC_REPLICAS_ON_FILES=1` runs the same tests without DATABASE_URL (each replica keeps its
 * own outbox under its STATE_ROOT): the reproduction of the double uploads this suite forbids.
 */
import { randomUUID } from "node:crypto";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { kbFilename } from "../../src/sync/sync-service.js";
import { startOpencodeServer, type OpencodeServer } from "../fixtures/opencode-server.js";
import { startOpenWebUI, type OpenWebUIAccount, type RealOpenWebUI } from "../fixtures/openwebui-real.js";
import { createTestDatabase, type TestDatabase } from "../fixtures/postgres.js";
import { say, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { gatewayChat } from "../helpers/gateway-chat.js";
import { spawnSidecar, tempDir, waitFor, type ChildSidecar } from "../helpers/harness.js";
import { startPausableProxy, type PausableProxy } from "../helpers/pausable-proxy.js";
import { startRoundRobinProxy, type RoundRobinProxy } from "../helpers/round-robin-proxy.js";

const ON_FILES = process.env.SYNC_REPLICAS_ON_FILES === "1";
const GATEWAY_KEY = `gw-${randomUUID()}`;
const DEBOUNCE_MS = 500;

let model: ScriptedModel;
let opencode: OpencodeServer;
let db: TestDatabase | undefined;
let owui: RealOpenWebUI;
let proxy: RoundRobinProxy;
/** The replicas reach Open WebUI through this: a test can make it hang. */
let owuiLink: PausableProxy;
let replicas: ChildSidecar[] = [];

beforeAll(async () => {
  const root = tempDir("op-sync-replicas-");
  model = await startScriptedModel();
  proxy = await startRoundRobinProxy(() => replicas.map((r) => r.url));
  [opencode, db, owui] = await Promise.all([
    startOpencodeServer(model.baseURL),
    ON_FILES ? undefined : createTestDatabase(),
    startOpenWebUI({ sidecarUrl: proxy.url, gatewayKey: GATEWAY_KEY, embeddingsBaseUrl: model.baseURL }),
  ]);
  owuiLink = await startPausableProxy(owui.url);
  replicas = await Promise.all(
    [0, 1].map((i) =>
      spawnSidecar({
        RUNNER_MODE: "shared",
        OPENCODE_BASE_URL: opencode.url,
        OPENCODE_SERVER_PASSWORD: opencode.password,
        ...(db ? { DATABASE_URL: db.url } : {}),
        SIDECAR_API_KEYS: GATEWAY_KEY,
        WORKSPACE_ROOT: path.join(root, "workspaces"),
        STATE_ROOT: path.join(root, `state-${i}`),
        OPENWEBUI_URL: owuiLink.url,
        OPENWEBUI_API_KEY: owui.admin.apiKey,
        OPENWEBUI_SYNC_DEBOUNCE_MS: String(DEBOUNCE_MS),
        OPENWEBUI_SYNC_MAX_BACKOFF_MS: "1000",
        LOG_LEVEL: "debug",
      }),
    ),
  );
}, 240_000);

afterAll(async () => {
  await proxy?.close();
  await Promise.all(replicas.map((r) => r.stop()));
  await owuiLink?.close();
  await owui?.close();
  await opencode?.close();
  await db?.drop();
  await model?.close();
});

const chat = async (url: string, who: OpenWebUIAccount, content: string) => {
  const turn = await gatewayChat(url, GATEWAY_KEY, who.id, content);
  expect(turn.status, turn.error?.message).toBe(200);
  return turn;
};

/** Upload requests Open WebUI has answered, from its own access log. */
const uploads = () => owui.logs.filter((l) => l.includes('"POST /api/v1/files/?process=true')).length;

/** Every file the admin (who uploads for the sync) holds in Open WebUI, by name. */
async function adminFiles(name: string): Promise<Array<{ id: string }>> {
  const out: Array<{ id: string; filename: string }> = [];
  for (let page = 1; ; page++) {
    const res = await owui.api(owui.admin.apiKey, "GET", `/api/v1/files/?content=false&page=${page}`);
    expect(res.status).toBe(200);
    out.push(...(res.body.items as typeof out));
    if (!res.body.items.length || out.length >= res.body.total) break;
  }
  return out.filter((f) => f.filename === name);
}

/** The KBs named for `who` (the sync's naming), as the admin sees them. */
async function kbsOf(who: OpenWebUIAccount): Promise<Array<{ id: string }>> {
  const res = await owui.api(owui.admin.apiKey, "GET", "/api/v1/knowledge/?page=1");
  expect(res.status).toBe(200);
  return (res.body.items as Array<{ id: string; name: string }>).filter((k) => k.name === `workspace-${who.id}`);
}

/** File name → content of `who`'s KB, read with their own key. */
async function kbContents(who: OpenWebUIAccount): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const [kb] = await kbsOf(who);
  if (!kb) return out;
  const res = await owui.api(who.apiKey, "GET", `/api/v1/knowledge/${kb.id}/files?page=1`);
  if (res.status !== 200) return out;
  for (const f of res.body.items as Array<{ id: string; filename: string; meta?: { name?: string } }>) {
    const content = await owui.api(who.apiKey, "GET", `/api/v1/files/${f.id}/data/content`);
    out.set(f.meta?.name ?? f.filename, content.status === 200 ? String(content.body.content ?? "") : `<${content.status}>`);
  }
  return out;
}

async function kbSoon(who: OpenWebUIAccount, check: (files: Map<string, string>) => boolean, what: string, timeoutMs = 30_000): Promise<Map<string, string>> {
  let files = new Map<string, string>();
  await waitFor(async () => check((files = await kbContents(who))), timeoutMs, `${what} (KB now: ${[...files.keys()].join(", ")})`);
  return files;
}

interface Status {
  pending: number;
  synced_files: number;
  last_synced: { path: string; op: string } | null;
  last_error: unknown;
}
async function status(r: ChildSidecar, who: OpenWebUIAccount): Promise<Status> {
  const res = await fetch(`${r.url}/v1/sync/status`, { headers: { Authorization: `Bearer ${GATEWAY_KEY}`, "X-OpenWebUI-User-Id": who.id } });
  expect(res.status).toBe(200);
  return (await res.json()) as Status;
}

/** Both replicas have an empty outbox for `who`, and a little more than a debounce passed (a late second upload would show). */
async function quiet(who: OpenWebUIAccount): Promise<void> {
  await waitFor(async () => (await Promise.all(replicas.map((r) => status(r, who)))).every((s) => s.pending === 0), 30_000, "empty outboxes");
  await new Promise((r) => setTimeout(r, DEBOUNCE_MS * 3));
}

describe(`knowledge-base sync from two replicas (${ON_FILES ? "each its own files" : "PostgreSQL"})`, () => {
  it("uploads a file the agent wrote exactly once, into one KB", async () => {
    const alice = owui.alice;
    // Each replica has served alice: both watch her file events on the shared opencode.
    await chat(replicas[0]!.url, alice, say.text("hello"));
    await chat(replicas[1]!.url, alice, say.text("hello again"));
    const before = uploads();
    await chat(replicas[0]!.url, alice, say.write("notes.md", "# Notes\nversion one"));
    await kbSoon(alice, (f) => f.get("notes.md")?.includes("version one") === true, "notes.md v1");
    await quiet(alice);
    expect(uploads() - before).toBe(1);
    expect(await adminFiles(kbFilename("notes.md"))).toHaveLength(1);
    expect([...(await kbContents(alice)).keys()]).toEqual(["notes.md"]);
    expect(await kbsOf(alice)).toHaveLength(1);
  });

  it("replaces it once when the agent edits it", async () => {
    const alice = owui.alice;
    const before = uploads();
    await chat(replicas[1]!.url, alice, say.write("notes.md", "# Notes\nversion two"));
    await kbSoon(alice, (f) => f.get("notes.md")?.includes("version two") === true, "notes.md v2");
    await quiet(alice);
    expect(uploads() - before).toBe(1);
    expect(await adminFiles("notes.md")).toHaveLength(1);
    expect([...(await kbContents(alice)).keys()]).toEqual(["notes.md"]);
  });

  it("removes it when the agent deletes it", async () => {
    const alice = owui.alice;
    const before = uploads();
    await chat(proxy.url, alice, say.bash("rm notes.md"));
    await kbSoon(alice, (f) => !f.has("notes.md"), "notes.md removed");
    await quiet(alice);
    expect(uploads() - before).toBe(0);
    expect(await adminFiles("notes.md")).toHaveLength(0);
  });

  it("answers the same status on every replica", async () => {
    const alice = owui.alice;
    await chat(replicas[0]!.url, alice, say.write("status.txt", "counted"));
    await kbSoon(alice, (f) => f.get("status.txt") === "counted", "status.txt");
    await quiet(alice);
    const [a, b] = await Promise.all(replicas.map((r) => status(r, alice)));
    expect(a).toMatchObject({ pending: 0, synced_files: 1, last_synced: { path: "status.txt", op: "upsert" } });
    expect(b).toEqual(a);
  });

  it.skipIf(ON_FILES)("keeps a change through a database outage, and delivers it after (no replica crashes)", async () => {
    const alice = owui.alice;
    // Open WebUI down: the change waits in the outbox while the database goes away.
    await owui.stop();
    let restarted = false;
    try {
      await chat(replicas[0]!.url, alice, say.write("through-outage.md", "kept"));
      await waitFor(async () => (await status(replicas[1]!, alice)).pending === 1, 20_000, "the change pending");
      await db!.acceptConnections(false);
      try {
        await owui.start();
        restarted = true;
        // Both replicas poll for due work meanwhile, and fail: a few rounds of it.
        await new Promise((r) => setTimeout(r, 2000));
        const res = await fetch(`${replicas[0]!.url}/v1/sync/status`, { headers: { Authorization: `Bearer ${GATEWAY_KEY}`, "X-OpenWebUI-User-Id": alice.id } });
        expect(res.status).toBe(503);
      } finally {
        await db!.acceptConnections(true);
      }
    } finally {
      if (!restarted) await owui.start();
    }
    await kbSoon(alice, (f) => f.get("through-outage.md") === "kept", "through-outage.md after the outage", 45_000);
    await quiet(alice);
    expect(await adminFiles("through-outage.md")).toHaveLength(1);
    for (const r of replicas) expect([r.proc.exitCode, r.proc.signalCode]).toEqual([null, null]);
    expect(replicas.some((r) => r.logs.some((l) => l.includes("sync state unavailable")))).toBe(true);
  }, 150_000);

  it("lets the other replica finish the outbox of a replica killed while sending it", async () => {
    const bob = owui.bob;
    const [victim, survivor] = replicas as [ChildSidecar, ChildSidecar];
    // Only the victim serves bob (only it hears of his files) and only it runs: the survivor
    // is frozen until the victim is dead. Open WebUI hangs, so the victim is killed in the
    // middle of sending bob's change, holding his outbox.
    survivor.proc.kill("SIGSTOP");
    owuiLink.pause();
    try {
      await chat(victim.url, bob, say.write("left-behind.md", "delivered by the survivor"));
      await waitFor(() => owuiLink.held > 0, 20_000, "the victim calling Open WebUI");
      await victim.stop("SIGKILL");
    } finally {
      survivor.proc.kill("SIGCONT");
      owuiLink.resume();
    }
    await kbSoon(bob, (f) => f.get("left-behind.md") === "delivered by the survivor", "left-behind.md delivered by the survivor");
    await waitFor(async () => (await status(survivor, bob)).pending === 0, 20_000, "the survivor's empty outbox");
    expect(await kbsOf(bob)).toHaveLength(1);
    expect(await adminFiles("left-behind.md")).toHaveLength(1);
  }, 120_000);
});
