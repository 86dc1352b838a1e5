/**
 * Who the caller is decides whose workspace and sessions a request touches. Requests are
 * shaped exactly like Open WebUI's (headers and body from the contract reference).
 */
import fs from "node:fs";
import path from "node:path";
import { randomUUID } from "node:crypto";
import OpenAI from "openai";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { userHash } from "../../src/workspace/user-space.js";
import { say, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { readSse, scriptedEnv, startSidecar, tempDir, type InProcessSidecar } from "../helpers/harness.js";

const GATEWAY_KEY = "sk-gateway-" + randomUUID();
const ALICE_KEY = "sk-alice-" + randomUUID();
const ALICE = "alice@example.com";
const BOB = "bob.müller@example.com";

let model: ScriptedModel;
let sidecar: InProcessSidecar;

/** Headers Open WebUI sends with ENABLE_FORWARD_USER_INFO_HEADERS=true (names percent-encoded). */
function openWebUiHeaders(userId: string, chatId: string): Record<string, string> {
  return {
    Authorization: `Bearer ${GATEWAY_KEY}`,
    "Content-Type": "application/json",
    "X-OpenWebUI-User-Name": encodeURIComponent(userId.split("@")[0]!),
    "X-OpenWebUI-User-Id": encodeURIComponent(userId),
    "X-OpenWebUI-User-Email": encodeURIComponent(userId),
    "X-OpenWebUI-User-Role": "user",
    "X-OpenWebUI-Chat-Id": chatId,
  };
}

/** A chat body as Open WebUI sends it (metadata/chat_id stripped; usage requested). */
function openWebUiBody(content: string, stream = true) {
  return {
    model: "open-persona/build",
    messages: [{ role: "system", content: "You are helpful." }, { role: "user", content }],
    stream,
    ...(stream ? { stream_options: { include_usage: true } } : {}),
  };
}

async function owuiChat(userId: string, content: string, chatId = randomUUID()) {
  const res = await fetch(`${sidecar.url}/v1/chat/completions`, {
    method: "POST",
    headers: openWebUiHeaders(userId, chatId),
    body: JSON.stringify(openWebUiBody(content)),
  });
  expect(res.status).toBe(200);
  const events = await readSse(res);
  return events
    .filter((e) => e.data && e.data !== "[DONE]")
    .map((e) => JSON.parse(e.data!))
    .map((p) => p.choices?.[0]?.delta?.content ?? "")
    .join("");
}

const ws = (userId: string) => path.join(sidecar.config.workspaceRoot, userHash(userId));

beforeAll(async () => {
  model = await startScriptedModel();
  const keysFile = path.join(tempDir(), "user-keys.json");
  fs.writeFileSync(keysFile, JSON.stringify({ [ALICE_KEY]: ALICE }));
  sidecar = await startSidecar(scriptedEnv(model.baseURL, { SIDECAR_API_KEYS: `other-key, ${GATEWAY_KEY}`, SIDECAR_USER_KEYS_FILE: keysFile }));
});
afterAll(async () => {
  await sidecar?.close();
  await model?.close();
});

describe("authentication", () => {
  it("rejects a missing or wrong key with 401 in OpenAI's error shape", async () => {
    for (const auth of [undefined, "Bearer nope", "Basic abc"]) {
      const res = await fetch(`${sidecar.url}/v1/models`, { headers: auth ? { Authorization: auth } : {} });
      expect(res.status).toBe(401);
      const body = await res.json();
      expect(body).toEqual({ error: { message: expect.any(String), type: "authentication_error", param: null, code: expect.any(String) } });
    }
    const sdk = new OpenAI({ baseURL: `${sidecar.url}/v1`, apiKey: "wrong" });
    await expect(sdk.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
  });

  it("refuses a gateway chat that names no user", async () => {
    const res = await fetch(`${sidecar.url}/v1/chat/completions`, {
      method: "POST",
      headers: { Authorization: `Bearer ${GATEWAY_KEY}`, "Content-Type": "application/json" },
      body: JSON.stringify(openWebUiBody("hi", false)),
    });
    expect(res.status).toBe(400);
    expect((await res.json()).error.code).toBe("missing_user");
  });
});

describe("per-user workspaces", () => {
  it("puts each user's files in their own hashed workspace, never the other's", async () => {
    expect(await owuiChat(ALICE, say.write("mine.txt", "alice's"))).toContain("wrote mine.txt");
    expect(await owuiChat(BOB, say.write("mine.txt", "bob's"))).toContain("wrote mine.txt");
    expect(fs.readFileSync(path.join(ws(ALICE), "mine.txt"), "utf8")).toBe("alice's");
    expect(fs.readFileSync(path.join(ws(BOB), "mine.txt"), "utf8")).toBe("bob's");
    expect(ws(ALICE)).not.toBe(ws(BOB));
    expect(path.basename(ws(BOB))).toMatch(/^[0-9a-f]{16}$/);
  });

  it("gives two users with the same chat id two different sessions", async () => {
    const chatId = randomUUID();
    await owuiChat(ALICE, say.text("a"), chatId);
    const bobAnswer = await owuiChat(BOB, say.countTurns(), chatId);
    expect(bobAnswer).toBe("turns=1");
    const map = (u: string) =>
      JSON.parse(fs.readFileSync(path.join(sidecar.config.stateRoot, "users", userHash(u), "sessions.json"), "utf8"));
    expect(map(ALICE)[chatId].sessionId).not.toBe(map(BOB)[chatId].sessionId);
  });

  it("a user key is its user: identity headers cannot switch to someone else", async () => {
    const sdk = new OpenAI({ baseURL: `${sidecar.url}/v1`, apiKey: ALICE_KEY });
    await sdk.chat.completions.create(
      { model: "open-persona/build", messages: [{ role: "user", content: say.write("via-key.txt", "k") }] },
      { headers: { "X-OpenWebUI-User-Id": BOB, "X-Session-Id": randomUUID() } },
    );
    expect(fs.existsSync(path.join(ws(ALICE), "via-key.txt"))).toBe(true);
    expect(fs.existsSync(path.join(ws(BOB), "via-key.txt"))).toBe(false);
  });

  it("keeps raw user ids and keys out of the logs", () => {
    const all = sidecar.logs.join("\n");
    expect(all).toContain(userHash(ALICE));
    for (const secret of [ALICE, BOB, encodeURIComponent(BOB), ALICE_KEY, GATEWAY_KEY]) expect(all).not.toContain(secret);
  });
});

describe("signed identity (OPENWEBUI_JWT_SECRET)", () => {
  const SECRET = "a-very-long-test-secret-" + randomUUID();
  let signed: InProcessSidecar;

  beforeAll(async () => {
    signed = await startSidecar(scriptedEnv(model.baseURL, { SIDECAR_API_KEYS: GATEWAY_KEY, OPENWEBUI_JWT_SECRET: SECRET }));
  });
  afterAll(async () => signed?.close());

  const jwt = (sub: string, secret = SECRET, exp = "5m") =>
    new SignJWT({ email: sub, name: "x", role: "user" })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject(sub)
      .setIssuer("open-webui")
      .setIssuedAt()
      .setExpirationTime(exp)
      .sign(new TextEncoder().encode(secret));

  async function post(headers: Record<string, string>) {
    return fetch(`${signed.url}/v1/chat/completions`, {
      method: "POST",
      headers: { Authorization: `Bearer ${GATEWAY_KEY}`, "Content-Type": "application/json", "X-OpenWebUI-Chat-Id": randomUUID(), ...headers },
      body: JSON.stringify(openWebUiBody(say.write("signed.txt", "s"), false)),
    });
  }

  it("takes the user only from a valid token", async () => {
    const res = await post({ "X-OpenWebUI-User-Jwt": await jwt("carol"), "X-OpenWebUI-User-Id": "mallory" });
    expect(res.status).toBe(200);
    expect(fs.existsSync(path.join(signed.config.workspaceRoot, userHash("carol"), "signed.txt"))).toBe(true);
    expect(fs.existsSync(path.join(signed.config.workspaceRoot, userHash("mallory")))).toBe(false);
  });

  it("does not trust plain user headers", async () => {
    const res = await post({ "X-OpenWebUI-User-Id": "mallory" });
    expect(res.status).toBe(400);
    expect((await res.json()).error.message).toMatch(/X-OpenWebUI-User-Jwt/);
    expect(fs.existsSync(path.join(signed.config.workspaceRoot, userHash("mallory")))).toBe(false);
  });

  it("rejects forged and expired tokens", async () => {
    for (const token of [await jwt("carol", "wrong-secret-wrong-secret"), await jwt("carol", SECRET, "-1m"), "not.a.jwt"]) {
      const res = await post({ "X-OpenWebUI-User-Jwt": token });
      expect(res.status).toBe(401);
      expect((await res.json()).error.code).toBe("invalid_user_jwt");
    }
  });
});
