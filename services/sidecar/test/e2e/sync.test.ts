/**
 * Knowledge-base sync against the Open WebUI contract double, for what the real Open WebUI
 * (e2e/openwebui.test.ts, where create/edit/delete, bursts, secrets, refused files, a deleted
 * KB, an outage and a sidecar restart are tested) cannot do on demand: answer 503 for a while,
 * and speak an older release's access dialect. The double follows the real one through the
 * shared contract suite (test/contract/).
 */
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startOpenWebUIDouble, type OpenWebUIDouble } from "../fixtures/openwebui-double.js";
import { say, script, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { readSse, scriptedEnv, startSidecar, waitFor, type InProcessSidecar } from "../helpers/harness.js";

const GATEWAY_KEY = `gw-${randomUUID()}`;
const ADMIN_KEY = `sk-${randomUUID().replace(/-/g, "")}`;
const ALICE = `alice-${randomUUID().slice(0, 8)}`;

let model: ScriptedModel;
let owui: OpenWebUIDouble;
let env: Record<string, string>;
let sidecar: InProcessSidecar;

const kb = (user: string) => owui.kbContents(`workspace-${user}`);

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
    OPENWEBUI_SYNC_DEBOUNCE_MS: "200",
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
