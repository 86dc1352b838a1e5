/**
 * Local mode runs one opencode per user: none before anyone asks, one per user (its own
 * data dir, port and password), one start for a user's concurrent first requests, and chats
 * kept in the single shared data dir of earlier releases go on in a new, seeded session.
 * (Process lifecycle — idle stop, crashes, recycling, signals — is in lifecycle.test.ts.)
 */
import fs from "node:fs";
import path from "node:path";
import { randomUUID } from "node:crypto";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SessionNotFoundError } from "../../src/opencode/client.js";
import { userHash, userSpace, type UserSpace } from "../../src/workspace/user-space.js";
import { say, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { opencodePids, scriptedEnv, startSidecar, tempDir, waitFor, type InProcessSidecar } from "../helpers/harness.js";

const KEY = "local-runner-gateway-key";
let model: ScriptedModel;

beforeAll(async () => {
  model = await startScriptedModel();
});
afterAll(async () => model?.close());

async function ask(url: string, user: string, chatId: string, history: OpenAI.ChatCompletionMessageParam[] = []) {
  const sdk = new OpenAI({ baseURL: `${url}/v1`, apiKey: KEY });
  const r = await sdk.chat.completions.create(
    { model: "open-persona/build", messages: [...history, { role: "user", content: say.countTurns() }] },
    { headers: { "X-OpenWebUI-User-Id": user, "X-Session-Id": chatId } },
  );
  return r.choices[0]!.message.content;
}

/** What a running opencode was started with (its environment and --port), from /proc. */
function processView(pid: number): { env: Record<string, string>; port: string } {
  const env = Object.fromEntries(
    fs
      .readFileSync(`/proc/${pid}/environ`, "utf8")
      .split("\0")
      .filter(Boolean)
      .map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]),
  );
  const argv = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
  return { env, port: argv[argv.indexOf("--port") + 1]! };
}

const sessionMap = (space: UserSpace): Record<string, { sessionId: string }> =>
  JSON.parse(fs.readFileSync(path.join(space.stateDir, "sessions.json"), "utf8"));

describe("one opencode per user", () => {
  let sidecar: InProcessSidecar;
  const space = (user: string) => userSpace(sidecar.config.workspaceRoot, sidecar.config.stateRoot, userHash(user));
  beforeAll(async () => {
    sidecar = await startSidecar(scriptedEnv(model.baseURL, { SIDECAR_API_KEYS: KEY }));
  });
  afterAll(async () => sidecar?.close());

  it("is ready with no users, and runs no opencode before a user asks", async () => {
    const res = await fetch(`${sidecar.url}/readyz`);
    expect(res.status).toBe(200);
    expect((await res.json()).detail).toMatch(/^0 user opencode process/);
    expect(opencodePids(process.pid)).toHaveLength(0);
  });

  it("gives two users two processes with their own data dirs, ports and passwords", async () => {
    const chats = { alice: randomUUID(), bob: randomUUID() };
    expect(await Promise.all([ask(sidecar.url, "alice", chats.alice), ask(sidecar.url, "bob", chats.bob)])).toEqual(["turns=1", "turns=1"]);
    const pids = opencodePids(process.pid);
    expect(pids).toHaveLength(2);
    const views = pids.map(processView);
    expect(views.map((v) => v.env.XDG_DATA_HOME).sort()).toEqual(
      ["alice", "bob"].map((u) => path.join(space(u).stateDir, "opencode", "data")).sort(),
    );
    expect(new Set(views.map((v) => v.env.OPENCODE_SERVER_PASSWORD)).size).toBe(2);
    // Sandboxed (bubblewrap is installed by the test setup), each user has their own config
    // dir: a shared writable one would let one user's agent plant a plugin in everyone's.
    expect(sidecar.logs.filter((l) => l.includes('"user opencode spawned"')).every((l) => l.includes('"sandboxed":true'))).toBe(true);
    expect(views.map((v) => v.env.XDG_CONFIG_HOME).sort()).toEqual(["alice", "bob"].map((u) => path.join(space(u).stateDir, "opencode", "config")).sort());
    expect(new Set(views.map((v) => v.port)).size).toBe(2);
    for (const u of ["alice", "bob"]) expect(fs.existsSync(path.join(space(u).stateDir, "opencode", "data", "opencode", "opencode.db"))).toBe(true);

    // Each session lives in its own user's database only.
    const aliceSession = sessionMap(space("alice"))[chats.alice]!.sessionId;
    const [aliceEp, bobEp] = await Promise.all([sidecar.runner.ensure(space("alice")), sidecar.runner.ensure(space("bob"))]);
    expect(aliceEp.client).not.toBe(bobEp.client);
    expect((await aliceEp.client.messages(aliceSession, aliceEp.directory)).length).toBeGreaterThan(0);
    await expect(bobEp.client.messages(aliceSession, bobEp.directory)).rejects.toBeInstanceOf(SessionNotFoundError);
  });

  it("starts one process for a user's concurrent first requests", async () => {
    const before = opencodePids(process.pid).length;
    const answers = await Promise.all(Array.from({ length: 4 }, () => ask(sidecar.url, "carol", randomUUID())));
    expect(answers).toEqual(Array(4).fill("turns=1"));
    expect(opencodePids(process.pid)).toHaveLength(before + 1);
    const spawns = (user: string) => sidecar.logs.filter((l) => l.includes("user opencode spawned") && l.includes(`"user":"${userHash(user)}"`)).length;
    expect(spawns("carol")).toBe(1);

    // The same from one tick, without the HTTP layer's jitter in between.
    const eps = await Promise.all(Array.from({ length: 4 }, () => sidecar.runner.ensure(space("erin"))));
    expect(new Set(eps.map((ep) => ep.client)).size).toBe(1);
    expect(spawns("erin")).toBe(1);
    expect(opencodePids(process.pid)).toHaveLength(before + 2);
  });
});

describe("an opencode binary that cannot run", () => {
  const chat = (url: string) =>
    fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "open-persona/build", messages: [{ role: "user", content: say.countTurns() }] }),
    });

  it("is not ready from the start when the binary is missing", async () => {
    const sc = await startSidecar(scriptedEnv(model.baseURL, { OPENCODE_BIN: path.join(tempDir(), "no-such-opencode") }));
    try {
      const ready = await fetch(`${sc.url}/readyz`);
      expect(ready.status).toBe(503);
      expect((await ready.json()).detail).toMatch(/not executable: ENOENT/);
      expect((await chat(sc.url)).status).toBe(503);
    } finally {
      await sc.close();
    }
  });

  it("turns not ready once a user's process fails to start, and answers that user 503", async () => {
    const bin = path.join(tempDir(), "opencode");
    fs.writeFileSync(bin, "#!/bin/sh\necho 'cannot run here' >&2\nexit 3\n", { mode: 0o755 });
    const sc = await startSidecar(scriptedEnv(model.baseURL, { OPENCODE_BIN: bin }));
    try {
      expect((await fetch(`${sc.url}/readyz`)).status).toBe(200);
      const res = await chat(sc.url);
      expect(res.status).toBe(503);
      expect((await res.json()).error.message).toMatch(/runner/i);
      const ready = await fetch(`${sc.url}/readyz`);
      expect(ready.status).toBe(503);
      expect((await ready.json()).detail).toMatch(/opencode did not start/);
    } finally {
      await sc.close();
    }
  });
});

describe("upgrading from the single shared opencode", () => {
  it("continues a chat whose session was in STATE_ROOT/opencode in a new session seeded from the resent history", async () => {
    const env = scriptedEnv(model.baseURL, { SIDECAR_API_KEYS: KEY });
    const chatId = randomUUID();
    const first = await startSidecar(env);
    const space = userSpace(first.config.workspaceRoot, first.config.stateRoot, userHash("dora"));
    let oldSession: string;
    try {
      expect(await ask(first.url, "dora", chatId)).toBe("turns=1");
      oldSession = sessionMap(space)[chatId]!.sessionId;
    } finally {
      await first.close();
    }
    // What an earlier release left behind: every user's sessions in one shared data dir.
    fs.renameSync(path.join(space.stateDir, "opencode"), path.join(first.config.stateRoot, "opencode"));

    const second = await startSidecar(env);
    try {
      expect(second.logs.some((l) => l.includes("shared opencode data dir of earlier releases is no longer used"))).toBe(true);
      const history: OpenAI.ChatCompletionMessageParam[] = [
        { role: "user", content: say.countTurns() },
        { role: "assistant", content: "turns=1" },
      ];
      // The seed (the transcript of the resent history) plus the new turn.
      expect(await ask(second.url, "dora", chatId, history)).toBe("turns=2");
      expect(second.logs.some((l) => l.includes("opencode session was lost; recreated"))).toBe(true);
      const newSession = sessionMap(space)[chatId]!.sessionId;
      expect(newSession).not.toBe(oldSession);
      // And the chat goes on in that session.
      expect(await ask(second.url, "dora", chatId, [...history, { role: "user", content: say.countTurns() }, { role: "assistant", content: "turns=2" }])).toBe("turns=3");
    } finally {
      await second.close();
    }
  });
});
