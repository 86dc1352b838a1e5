/**
 * Knowledge-base sync end to end: a real opencode (local runner) driven by the scripted
 * model writes, edits and deletes files; the Open WebUI contract double must end up with
 * exactly the workspace's syncable files, in each user's own KB — through outages and
 * restarts.
 */
import fs from "node:fs";
import path from "node:path";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { userHash } from "../../src/workspace/user-space.js";
import { startOpenWebUIDouble, type OpenWebUIDouble } from "../fixtures/openwebui-double.js";
import { say, script, startScriptedModel, type ScriptedModel, type Step } from "../fixtures/scripted-model.js";
import { readSse, scriptedEnv, startSidecar, waitFor, type InProcessSidecar } from "../helpers/harness.js";

const GATEWAY_KEY = `gw-${randomUUID()}`;
const ADMIN_KEY = `sk-${randomUUID().replace(/-/g, "")}`;
const ALICE = `alice-${randomUUID().slice(0, 8)}`;
const BOB = `bob-${randomUUID().slice(0, 8)}`;

let model: ScriptedModel;
let owui: OpenWebUIDouble;
let env: Record<string, string>;
let sidecar: InProcessSidecar;

const kb = (user: string) => owui.kbContents(`workspace-${user}`);
const uploads = () => owui.requests.filter((r) => r.method === "POST" && r.path.startsWith("/api/v1/files")).length;

async function chat(user: string, content: string, chatId = randomUUID()) {
  const res = await fetch(`${sidecar.url}/v1/chat/completions`, {
    method: "POST",
    headers: {
      Authorization: `Bearer ${GATEWAY_KEY}`,
      "Content-Type": "application/json",
      "X-OpenWebUI-User-Id": user,
      "X-OpenWebUI-Chat-Id": chatId,
    },
    body: JSON.stringify({ model: "open-persona/build", stream: true, messages: [{ role: "user", content }] }),
  });
  expect(res.status).toBe(200);
  return readSse(res);
}

async function status(user: string) {
  const res = await fetch(`${sidecar.url}/v1/sync/status`, { headers: { Authorization: `Bearer ${GATEWAY_KEY}`, "X-OpenWebUI-User-Id": user } });
  return res.json();
}

beforeAll(async () => {
  model = await startScriptedModel();
  owui = await startOpenWebUIDouble({ apiKey: ADMIN_KEY, version: "0.12.0" });
  env = scriptedEnv(model.baseURL, {
    SIDECAR_API_KEYS: GATEWAY_KEY,
    OPENWEBUI_URL: owui.url,
    OPENWEBUI_API_KEY: ADMIN_KEY,
    // Generous: a slow machine must not split the 20-edit burst into more than two uploads.
    OPENWEBUI_SYNC_DEBOUNCE_MS: "1000",
    OPENWEBUI_SYNC_MAX_BACKOFF_MS: "400",
  });
  sidecar = await startSidecar(env);
});
afterAll(async () => {
  await sidecar?.close();
  await owui?.close();
  await model?.close();
});

describe("knowledge-base sync", () => {
  it("creates the user's KB, readable by that user only, and syncs a new file", async () => {
    await chat(ALICE, say.write("notes.md", "version one"));
    await waitFor(() => kb(ALICE).get("notes.md") === "version one", 15_000, "notes.md in the KB");
    const [k] = [...owui.knowledge.values()].filter((x) => x.name === `workspace-${ALICE}`);
    expect(k!.accessGrants).toHaveLength(1);
    expect(k!.accessGrants![0]).toMatchObject({ principal_type: "user", principal_id: ALICE, permission: "read" });
    expect(k!.public).toBe(false);
  });

  it("replaces an edited file with one new version and removes the old one", async () => {
    const oldIds = [...owui.files.values()].filter((f) => f.filename === "notes.md").map((f) => f.id);
    await chat(ALICE, say.write("notes.md", "version two"));
    await waitFor(() => kb(ALICE).get("notes.md") === "version two", 15_000, "the new version");
    const now = [...owui.files.values()].filter((f) => f.filename === "notes.md");
    expect(now).toHaveLength(1);
    for (const id of oldIds) expect(owui.files.has(id)).toBe(false);
  });

  it("removes a file deleted through the bash tool", async () => {
    await chat(ALICE, say.write("doomed.txt", "short-lived"));
    await waitFor(() => kb(ALICE).has("doomed.txt"), 15_000, "doomed.txt synced");
    await chat(ALICE, say.bash("rm doomed.txt"));
    await waitFor(() => !kb(ALICE).has("doomed.txt"), 15_000, "doomed.txt removed");
    expect([...owui.files.values()].some((f) => f.filename === "doomed.txt")).toBe(false);
  });

  it("coalesces a burst of 20 edits into one or two uploads", async () => {
    await waitFor(async () => (await status(ALICE)).pending === 0, 15_000, "a quiet outbox");
    const before = uploads();
    const steps: Step[] = Array.from({ length: 20 }, (_, i) => ({ tool: "write", args: { filePath: "burst.txt", content: `edit ${i + 1}` } }));
    await chat(ALICE, script(...steps, { text: "done editing" }));
    await waitFor(() => kb(ALICE).get("burst.txt") === "edit 20", 20_000, "the last edit");
    await new Promise((r) => setTimeout(r, 1000));
    expect(uploads() - before).toBeGreaterThanOrEqual(1);
    expect(uploads() - before).toBeLessThanOrEqual(2);
  });

  it("never sends secrets or ignored files", async () => {
    const marker = `SECRET-${randomUUID()}`;
    await chat(ALICE, script(
      { tool: "write", args: { filePath: ".env", content: `API_KEY=${marker}` } },
      { tool: "write", args: { filePath: "deploy/server.pem", content: marker } },
      { tool: "write", args: { filePath: ".gitignore", content: "scratch/\n" } },
      { tool: "write", args: { filePath: "scratch/tmp.txt", content: marker } },
      { tool: "write", args: { filePath: "visible.txt", content: "fine" } },
      { tool: "write", args: { filePath: "docs/guide.md", content: "nested" } },
      { text: "wrote them" },
    ));
    await waitFor(() => kb(ALICE).get("visible.txt") === "fine", 15_000, "visible.txt");
    // Open WebUI keeps only basenames: directories are folded into the name.
    await waitFor(() => kb(ALICE).get("docs__guide.md") === "nested", 15_000, "docs/guide.md");
    await waitFor(async () => (await status(ALICE)).pending === 0, 15_000, "the outbox to drain");
    const everything = [...owui.files.values()].map((f) => f.content.toString("utf8")).join("\n");
    expect(everything).not.toContain(marker);
    expect([...kb(ALICE).keys()].some((k) => k.includes(".env") || k.endsWith(".pem") || k.includes("tmp.txt"))).toBe(false);
    // The logs say what was skipped and why, once per path (not at every reconciliation).
    const skips = sidecar.logs.filter((l) => l.includes('"msg":"sync skipped"') && l.includes('"path":".env"'));
    expect(skips).toHaveLength(1);
    expect(skips[0]).toContain("looks like a secret");
    expect(sidecar.logs.some((l) => l.includes('"msg":"sync skipped"') && l.includes('"path":"scratch/tmp.txt"') && l.includes(".gitignore"))).toBe(true);
    expect(sidecar.logs.join("\n")).not.toContain(marker);
  });

  it("settles identical content in two files without an error loop (duplicate-content quirk)", async () => {
    const same = `same content ${randomUUID()}`;
    await chat(ALICE, say.write("copy-a.txt", same));
    await waitFor(() => kb(ALICE).get("copy-a.txt") === same, 15_000, "copy-a.txt");
    const n = uploads();
    await chat(ALICE, say.write("copy-b.txt", same));
    await waitFor(async () => (await status(ALICE)).pending === 0, 15_000, "the outbox to drain");
    // Open WebUI refused the copy; the sidecar dropped the orphan upload and does not retry.
    expect(kb(ALICE).has("copy-b.txt")).toBe(false);
    expect([...owui.files.values()].filter((f) => f.content.toString("utf8") === same)).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 1000));
    expect(uploads() - n).toBe(1);
  });

  it("recreates the KB when someone deleted it in Open WebUI", async () => {
    const [gone] = [...owui.knowledge.values()].filter((x) => x.name === `workspace-${ALICE}`);
    owui.knowledge.delete(gone!.id);
    await chat(ALICE, say.write("after-kb-loss.txt", "back again"));
    await waitFor(() => kb(ALICE).get("after-kb-loss.txt") === "back again", 20_000, "the file in a new KB");
    // Everything synced before comes back into the new KB too.
    await waitFor(() => kb(ALICE).get("notes.md") === "version two" && kb(ALICE).get("burst.txt") === "edit 20", 20_000, "earlier files re-synced");
    const [fresh] = [...owui.knowledge.values()].filter((x) => x.name === `workspace-${ALICE}`);
    expect(fresh!.id).not.toBe(gone!.id);
  });

  it("keeps two users' files in two separate KBs", async () => {
    await chat(BOB, say.write("bob.txt", "bob's file"));
    await waitFor(() => kb(BOB).get("bob.txt") === "bob's file", 15_000, "bob.txt");
    expect(kb(BOB).has("notes.md")).toBe(false);
    expect(kb(ALICE).has("bob.txt")).toBe(false);
    const bobStatus = await status(BOB);
    expect(bobStatus.enabled).toBe(true);
    expect(JSON.stringify(bobStatus)).not.toContain("notes.md");
  });

  it("loses nothing while Open WebUI answers 503, and delivers after it recovers", async () => {
    owui.setOutage(503);
    await chat(ALICE, script(
      { tool: "write", args: { filePath: "during-outage-1.txt", content: "one" } },
      { tool: "write", args: { filePath: "during-outage-2.txt", content: "two" } },
      { text: "ok" },
    ));
    await waitFor(async () => (await status(ALICE)).last_error !== null && (await status(ALICE)).pending >= 2, 15_000, "failures to be recorded");
    await new Promise((r) => setTimeout(r, 1500)); // a few retries against the outage
    owui.setOutage(null);
    await waitFor(() => kb(ALICE).get("during-outage-1.txt") === "one" && kb(ALICE).get("during-outage-2.txt") === "two", 20_000, "delivery after recovery");
    await waitFor(async () => (await status(ALICE)).pending === 0, 10_000, "an empty outbox");
  });

  it("delivers pending work after a sidecar restart", async () => {
    owui.setOutage(503);
    await chat(ALICE, say.write("across-restart.txt", "survived"));
    await waitFor(async () => (await status(ALICE)).pending >= 1, 15_000, "pending work");
    await sidecar.close();
    // Written while the sidecar is down: only startup reconciliation can find it.
    fs.writeFileSync(path.join(env.WORKSPACE_ROOT!, userHash(ALICE), "while-down.txt"), "found later");
    owui.setOutage(null);
    sidecar = await startSidecar(env);
    await waitFor(
      () => kb(ALICE).get("across-restart.txt") === "survived" && kb(ALICE).get("while-down.txt") === "found later",
      20_000,
      "delivery after the restart",
    );
  });

  it("refuses a status request that names no user", async () => {
    const res = await fetch(`${sidecar.url}/v1/sync/status`, { headers: { Authorization: `Bearer ${GATEWAY_KEY}` } });
    expect(res.status).toBe(400);
  });
});

describe("older Open WebUI (0.7, access_control dialect)", () => {
  it("creates a private KB with access_control naming only the user", async () => {
    const old = await startOpenWebUIDouble({ apiKey: ADMIN_KEY, version: "0.7.2" });
    const sc = await startSidecar(
      scriptedEnv(model.baseURL, { SIDECAR_API_KEYS: GATEWAY_KEY, OPENWEBUI_URL: old.url, OPENWEBUI_API_KEY: ADMIN_KEY, OPENWEBUI_SYNC_DEBOUNCE_MS: "200" }),
    );
    try {
      const res = await fetch(`${sc.url}/v1/chat/completions`, {
        method: "POST",
        headers: { Authorization: `Bearer ${GATEWAY_KEY}`, "Content-Type": "application/json", "X-OpenWebUI-User-Id": "carol" },
        body: JSON.stringify({ model: "open-persona/build", messages: [{ role: "user", content: say.write("c.txt", "carol's") }] }),
      });
      expect(res.status).toBe(200);
      await waitFor(() => old.kbContents("workspace-carol").get("c.txt") === "carol's", 15_000, "c.txt in the 0.7 KB");
      const [k] = [...old.knowledge.values()].filter((x) => x.name === "workspace-carol");
      expect(k!.public).toBe(false);
      expect(k!.accessControl).toEqual({ read: { group_ids: [], user_ids: ["carol"] }, write: { group_ids: [], user_ids: [] } });
    } finally {
      await sc.close();
      await old.close();
    }
  });
});
