/**
 * The chat API through the official *Python* `openai` client (what most SDK users run):
 * python/openai_client_probe.py makes the calls and prints what it observed as one JSON
 * object; this file asserts on it. Sidecar → real opencode → the scripted model, as in
 * chat.test.ts, with the caller identified by a per-user key.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { say, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { scriptedEnv, startSidecar, tempDir, type InProcessSidecar } from "../helpers/harness.js";

const REPO = fileURLToPath(new URL("../../../..", import.meta.url));
const PYTHON = path.join(REPO, ".venv/pyclient/bin/python");
const PROBE = fileURLToPath(new URL("./python/openai_client_probe.py", import.meta.url));
/** The probe's own deadline; each test allows a little more so a hung probe fails with its output. */
const PROBE_DEADLINE_MS = 75_000;
const TEST_TIMEOUT_MS = 90_000;

const USER_KEY = "sk-py-" + randomUUID();

let model: ScriptedModel;
let sidecar: InProcessSidecar;

interface Usage {
  prompt: number;
  completion: number;
  total: number;
}
interface StreamSeen {
  deltas: Array<{ text: string; ms: number }>;
  finish: string | null;
  usage: Usage | null;
  usage_after_finish: boolean;
}
interface CompleteSeen {
  object: string;
  role: string;
  content: string | null;
  finish: string;
  usage: Usage | null;
}
interface SessionSeen {
  history_first_answer: string;
  resent: string;
  by_header: string;
}
interface CaughtError {
  class: string | null;
  status?: number;
  code?: string | null;
  type?: string | null;
  param?: string | null;
  message?: string;
}
interface ErrorsSeen {
  unknown_model: CaughtError;
  wrong_key_models: CaughtError;
  wrong_key_chat: CaughtError;
}

/** Runs one probe scenario and returns its JSON; any failure carries the probe's output. */
function probe<T>(scenario: string, input: Record<string, unknown> = {}): Promise<T & { openai_version: string }> {
  // A clean environment: proxy or OPENAI_* variables from the host must not reroute the client.
  const env = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: process.env.HOME ?? "/tmp",
    OPENAI_BASE_URL: `${sidecar.url}/v1`,
    OPENAI_API_KEY: USER_KEY,
    PROBE_INPUT: JSON.stringify(input),
    // The repository is shared: leave no __pycache__ next to the probe.
    PYTHONDONTWRITEBYTECODE: "1",
  };
  return new Promise((resolve, reject) => {
    execFile(PYTHON, [PROBE, scenario], { env, timeout: PROBE_DEADLINE_MS, killSignal: "SIGKILL" }, (err, stdout, stderr) => {
      const lines = stdout.trim().split("\n");
      const show = () => `probe '${scenario}' ${err ? `failed (${err.message.split("\n")[0]})` : "printed no JSON"}\nstdout: ${stdout}\nstderr: ${stderr}`;
      try {
        const out = JSON.parse(lines.at(-1) ?? "") as T & { openai_version: string; fatal?: unknown };
        if (err || out.fatal) reject(new Error(show()));
        else resolve(out);
      } catch {
        reject(new Error(show()));
      }
    });
  });
}

/** A recorded model message's text (opencode sends a string or text parts). */
function textOf(m: { content?: string | Array<{ text?: string }> | null }): string {
  return typeof m.content === "string" ? m.content : (m.content ?? []).map((p) => p.text ?? "").join("");
}

beforeAll(async () => {
  if (!fs.existsSync(PYTHON)) {
    throw new Error(`${PYTHON} is missing: run scripts/openwebui-setup.sh (it installs the pinned Python openai client into .venv/pyclient)`);
  }
  model = await startScriptedModel();
  const keysFile = path.join(tempDir(), "user-keys.json");
  fs.writeFileSync(keysFile, JSON.stringify({ [USER_KEY]: "py-user@example.com" }));
  sidecar = await startSidecar(scriptedEnv(model.baseURL, { SIDECAR_USER_KEYS_FILE: keysFile }));
});
afterAll(async () => {
  await sidecar?.close();
  await model?.close();
});

describe("the Python openai client", () => {
  it("streams a reply in several chunks, then a usage chunk", async () => {
    const seen = await probe<StreamSeen>("stream", { prompt: say.slow(10, 300) });
    // The pin in scripts/openwebui-setup.sh: this is the client the test is about.
    expect(seen.openai_version).toBe("2.29.0");
    expect(seen.deltas.map((d) => d.text).join("")).toBe("tok ".repeat(10));
    expect(seen.deltas.length).toBeGreaterThanOrEqual(8);
    // Ten tokens 300 ms apart (2.7 s first to last): a buffered reply would arrive all at once.
    // The wide margin is for a loaded machine, where opencode hands over the first tokens late
    // and the rest catch up (seen at load 8: two bursts).
    expect(seen.deltas.at(-1)!.ms - seen.deltas[0]!.ms).toBeGreaterThan(1000);
    expect(seen.finish).toBe("stop");
    // The scripted model reports prompt_tokens = 100 + messages and 7 completion tokens.
    expect(seen.usage!.prompt).toBeGreaterThan(100);
    expect(seen.usage!.completion).toBe(7);
    expect(seen.usage!.total).toBe(seen.usage!.prompt + seen.usage!.completion);
    expect(seen.usage_after_finish).toBe(true);
  }, TEST_TIMEOUT_MS);

  it("gets a whole chat.completion without streaming", async () => {
    const seen = await probe<CompleteSeen>("complete", { prompt: say.text("answer for python") });
    expect(seen).toMatchObject({ object: "chat.completion", role: "assistant", content: "answer for python", finish: "stop" });
    expect(seen.usage!.prompt).toBeGreaterThan(100);
    expect(seen.usage!.completion).toBe(7);
    expect(seen.usage!.total).toBe(seen.usage!.prompt + seen.usage!.completion);
  }, TEST_TIMEOUT_MS);

  it("keeps one agent session across turns, by resent history or by X-Session-Id", async () => {
    // Unique first messages: the history-keyed chat is derived from the first user message.
    const historyFirst = say.text(`first answer ${randomUUID()}`);
    const count = say.countTurns();
    const seen = await probe<SessionSeen>("session", { history_first: historyFirst, count, header_first: say.text(`noted ${randomUUID()}`) });
    expect(seen.history_first_answer).toMatch(/^first answer /);
    // The header style sends only the new message: a fresh session would count 1 turn.
    expect(seen.by_header).toBe("turns=2");
    expect(seen.resent).toBe("turns=2");
    // A fresh session seeded with the resent history would also count 2; the model must have
    // seen the first turn as it was asked, not as a restored transcript.
    const second = model.requests.filter((r) => r.lastUserText.includes(count) && r.body.messages.some((m) => textOf(m).includes(historyFirst)));
    expect(second).toHaveLength(1);
    const firstUser = second[0]!.body.messages.find((m) => m.role === "user")!;
    expect(textOf(firstUser)).toContain(historyFirst);
    expect(textOf(firstUser)).not.toMatch(/conversation so far/i);
  }, TEST_TIMEOUT_MS);

  it("raises the SDK's typed exceptions for an unknown model and a wrong key", async () => {
    const seen = await probe<ErrorsSeen>("errors", { wrong_key: "sk-wrong-" + randomUUID() });
    expect(seen.unknown_model).toMatchObject({ class: "NotFoundError", status: 404, code: "model_not_found", param: "model" });
    expect(seen.unknown_model.message).toContain("no-such-model");
    for (const e of [seen.wrong_key_models, seen.wrong_key_chat]) {
      expect(e).toMatchObject({ class: "AuthenticationError", status: 401, code: "invalid_api_key", type: "authentication_error" });
    }
  }, TEST_TIMEOUT_MS);
});
