/**
 * Bad input is a 400 in OpenAI's error shape — never a 500, a stack trace or an internal
 * detail — and odd but legal input (chat ids named like object prototype members, user ids
 * percent-encoded or not) works like any other.
 */
import http from "node:http";
import net from "node:net";
import zlib from "node:zlib";
import { randomUUID } from "node:crypto";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startBrokenRunner } from "../fixtures/broken-runner.js";
import { say, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { scriptedEnv, startSidecar, tempDir, type InProcessSidecar } from "../helpers/harness.js";

const GATEWAY_KEY = "sk-gateway-" + randomUUID();
const OTHER_KEY = "sk-other-" + randomUUID();
const JWT_SECRET = "a-very-long-test-secret-" + randomUUID();
const PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

let model: ScriptedModel;
let sidecar: InProcessSidecar;

/** OpenAI's error body: exactly these four keys (`param` may be null). */
function expectErrorShape(json: { error?: Record<string, unknown> }) {
  expect(Object.keys(json.error ?? {}).sort()).toEqual(["code", "message", "param", "type"]);
  expect(json.error).toMatchObject({ message: expect.any(String), type: expect.any(String), code: expect.any(String) });
}

/** Nothing a client reads may be a stack trace, a filesystem path or a raw exception. */
function expectNoInternals(message: string) {
  expect(message).not.toMatch(/\n\s+at |\/(home|tmp|usr|var|root|work)\/|[A-Z]\w*Error\b|\/session\b|ECONN|ENOENT/);
}

const gateway = (userId = "alice") => ({ authorization: `Bearer ${GATEWAY_KEY}`, "x-openwebui-user-id": userId });

function chatBody(content: unknown, extra: Record<string, unknown> = {}) {
  return { model: "open-persona/build", messages: [{ role: "user", content }], ...extra };
}

async function post(body: unknown, headers: Record<string, string> = {}, base = sidecar.url) {
  return fetch(`${base}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", ...gateway(), "x-session-id": randomUUID(), ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

/**
 * A request as raw as HTTP allows: repeated headers and header bytes outside ASCII, which
 * `fetch` cannot send (it joins repeats and refuses non-Latin-1 strings).
 */
function rawPost(base: string, headers: Record<string, string | string[]>, body: string | Buffer): Promise<{ status: number; json: any }> {
  const url = new URL(`${base}/v1/chat/completions`);
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: "POST", headers: { "content-type": "application/json", ...headers } }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (text += d));
      res.on("end", () => resolve({ status: res.statusCode!, json: text ? JSON.parse(text) : undefined }));
    });
    req.on("error", reject);
    // A Buffer: with a string body Node sends the headers in one write with it, as UTF-8.
    req.end(Buffer.from(body));
  });
}

/** A header value carrying `s` as raw UTF-8 bytes (Node sends a header's chars as Latin-1 bytes). */
const utf8Bytes = (s: string) => Buffer.from(s, "utf8").toString("latin1");

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

beforeAll(async () => {
  model = await startScriptedModel();
  sidecar = await startSidecar(scriptedEnv(model.baseURL, { SIDECAR_API_KEYS: `${GATEWAY_KEY},${OTHER_KEY}`, MAX_CONCURRENT_RUNS_PER_USER: "10" }));
});
afterAll(async () => {
  await sidecar?.close();
  await model?.close();
});

describe("content parts", () => {
  it.each([
    ["an image_url part without image_url", { type: "image_url" }, "messages[0].content[1].image_url"],
    ["a file part without file", { type: "file" }, "messages[0].content[1].file"],
    ["a text part without text", { type: "text" }, "messages[0].content[1].text"],
  ])("%s → 400 naming the missing object", async (_what, part, param) => {
    const res = await post(chatBody([{ type: "text", text: say.text("never") }, part]));
    expect(res.status).toBe(400);
    const json = await res.json();
    expectErrorShape(json);
    expect(json.error).toMatchObject({ type: "invalid_request_error", code: "invalid_request", param });
  });

  it.each([
    ["bytes that are no image", `data:image/png;base64,${Buffer.from("just some text, no picture").toString("base64")}`],
    ["broken base64", "data:image/png;base64,iVBORw0KGgo!!not*base64"],
    ["a truncated image header", "data:image/png;base64,iVBO"],
    ["an SVG (scripts, not pixels)", `data:image/svg+xml;base64,${Buffer.from("<svg xmlns='http://www.w3.org/2000/svg'/>").toString("base64")}`],
  ])("an image data URL holding %s → 400 before the agent runs", async (_what, url) => {
    const before = model.requests.length;
    const res = await post(chatBody([{ type: "text", text: say.text("never") }, { type: "image_url", image_url: { url } }]));
    expect(res.status).toBe(400);
    const json = await res.json();
    expectErrorShape(json);
    expect(json.error).toMatchObject({ type: "invalid_request_error", code: "invalid_image", param: "messages" });
    expect(model.requests.length).toBe(before);
  });

  it("an image sent as a file part is checked the same way", async () => {
    const res = await post(chatBody([{ type: "text", text: say.text("never") }, { type: "file", file: { file_data: "data:image/jpeg;base64,AAAAAAAA", filename: "x.jpg" } }]));
    expect(res.status).toBe(400);
    expect((await res.json()).error.code).toBe("invalid_image");
  });

  it("more images than the cap → 400 stating the cap; the cap itself is accepted", async () => {
    const images = (n: number) => Array.from({ length: n }, () => ({ type: "image_url", image_url: { url: PNG } }));
    const res = await post(chatBody([{ type: "text", text: say.text("never") }, ...images(17)]));
    expect(res.status).toBe(400);
    const json = await res.json();
    expectErrorShape(json);
    expect(json.error.code).toBe("too_many_images");
    expect(json.error.message).toMatch(/\b16\b/);

    const ok = await post(chatBody([{ type: "text", text: say.text("sixteen seen") }, ...images(16)]));
    expect(ok.status).toBe(200);
    expect((await ok.json()).choices[0].message.content).toBe("sixteen seen");
  });
});

describe("compressed bodies", () => {
  const json = JSON.stringify(chatBody(say.text("never")));

  it.each([
    ["gzip", "garbage", Buffer.from("this is not gzip at all")],
    ["gzip", "truncated", zlib.gzipSync(json).subarray(0, 20)],
    ["br", "garbage", Buffer.from("\xff\xff\xff this is not brotli", "latin1")],
    ["deflate", "garbage", Buffer.from("not deflate either")],
  ])("%s (%s) → 400 in the OpenAI shape", async (encoding, _what, body) => {
    const res = await rawPost(sidecar.url, { ...gateway(), "content-encoding": encoding, "x-session-id": randomUUID() }, body);
    expect(res.status).toBe(400);
    expectErrorShape(res.json);
    expect(res.json.error).toMatchObject({ type: "invalid_request_error", code: "invalid_body_encoding" });
    expectNoInternals(res.json.error.message);
  });
});

describe("errors carry no internals", () => {
  it("a runner's 500 reaches the client without its route or its body; the log keeps them", async () => {
    // Healthy, streams events, but fails every session call with a stack trace in its body.
    const broken = await startBrokenRunner({ contentType: "text/plain", body: "TypeError: boom\n    at handler (/home/runner/opencode/src/server.ts:42:7)" });
    const root = tempDir();
    const bad = await startSidecar({
      WORKSPACE_ROOT: `${root}/w`,
      STATE_ROOT: `${root}/s`,
      RUNNER_MODE: "shared",
      OPENCODE_BASE_URL: broken.url,
    });
    try {
      const res = await fetch(`${bad.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(chatBody("hi")),
      });
      expect(res.status).toBe(502);
      const json = await res.json();
      expectErrorShape(json);
      expect(json.error.code).toBe("runner_bad_status");
      expect(json.error.message).toMatch(/agent runner/);
      expectNoInternals(json.error.message);
      const logged = bad.logs.filter((l) => l.includes('"request failed"')).join("\n");
      expect(logged).toContain("/session");
      expect(logged).toContain("500");
    } finally {
      await bad.close();
      broken.close();
    }
  });

  it("an unreachable runner is reported without the exception behind it", async () => {
    const down = await startSidecar({ ...scriptedEnv(model.baseURL), RUNNER_MODE: "shared", OPENCODE_BASE_URL: `http://127.0.0.1:${await freePort()}`, RUNNER_START_TIMEOUT_MS: "1000" });
    try {
      const res = await fetch(`${down.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(chatBody("hi")) });
      expect(res.status).toBe(503);
      const json = await res.json();
      expectErrorShape(json);
      expect(json.error.message).toMatch(/agent runner/);
      expectNoInternals(json.error.message);
    } finally {
      await down.close();
    }
  });
});

describe("identity headers", () => {
  it("two X-OpenWebUI-User-Id headers → 400, not a third identity", async () => {
    const res = await rawPost(sidecar.url, { authorization: `Bearer ${GATEWAY_KEY}`, "x-openwebui-user-id": ["alice", "bob"], "x-session-id": randomUUID() }, JSON.stringify(chatBody(say.text("never"))));
    expect(res.status).toBe(400);
    expectErrorShape(res.json);
    expect(res.json.error).toMatchObject({ type: "invalid_request_error", code: "duplicate_header" });
    expect(res.json.error.message).toMatch(/X-OpenWebUI-User-Id/i);
  });

  it("two Authorization headers → 400, even when the first is a valid key", async () => {
    const res = await rawPost(
      sidecar.url,
      { authorization: [`Bearer ${GATEWAY_KEY}`, `Bearer ${OTHER_KEY}`], "x-openwebui-user-id": "alice", "x-session-id": randomUUID() },
      JSON.stringify(chatBody(say.text("never"))),
    );
    expect(res.status).toBe(400);
    expect(res.json.error.code).toBe("duplicate_header");
  });

  it("a user id sent percent-encoded or as raw UTF-8 is one user, with one workspace and one session", async () => {
    const chatId = randomUUID();
    const user = "jürgen.müller@example.com";
    const ask = (userHeader: string) =>
      rawPost(sidecar.url, { authorization: `Bearer ${GATEWAY_KEY}`, "x-openwebui-user-id": userHeader, "x-openwebui-chat-id": chatId }, JSON.stringify(chatBody(say.countTurns())));
    const encoded = await ask(encodeURIComponent(user));
    expect(encoded.status).toBe(200);
    expect(encoded.json.choices[0].message.content).toBe("turns=1");
    const raw = await ask(utf8Bytes(user));
    expect(raw.status).toBe(200);
    expect(raw.json.choices[0].message.content).toBe("turns=2");
  });

  it("a user id with a literal '%' works, and is the same user as its encoded form", async () => {
    const chatId = randomUUID();
    const ask = (userHeader: string) => post(chatBody(say.countTurns()), { ...gateway(userHeader), "x-openwebui-chat-id": chatId });
    const raw = await ask("100%-sure");
    expect(raw.status).toBe(200);
    expect((await raw.json()).choices[0].message.content).toBe("turns=1");
    const encoded = await ask(encodeURIComponent("100%-sure"));
    expect((await encoded.json()).choices[0].message.content).toBe("turns=2");
  });
});

describe("signed identity lifetime (OPENWEBUI_JWT_MAX_AGE_S)", () => {
  let signed: InProcessSidecar;
  beforeAll(async () => {
    signed = await startSidecar(scriptedEnv(model.baseURL, { SIDECAR_API_KEYS: GATEWAY_KEY, OPENWEBUI_JWT_SECRET: JWT_SECRET, OPENWEBUI_JWT_MAX_AGE_S: "120" }));
  });
  afterAll(async () => signed?.close());

  const now = () => Math.floor(Date.now() / 1000);
  function jwt(claims: { iat?: number; exp?: number }) {
    const t = new SignJWT({ role: "user" }).setProtectedHeader({ alg: "HS256" }).setSubject("carol").setIssuer("open-webui");
    if (claims.iat !== undefined) t.setIssuedAt(claims.iat);
    if (claims.exp !== undefined) t.setExpirationTime(claims.exp);
    return t.sign(new TextEncoder().encode(JWT_SECRET));
  }
  const ask = async (token: string | string[]) =>
    rawPost(signed.url, { authorization: `Bearer ${GATEWAY_KEY}`, "x-openwebui-user-jwt": token, "x-session-id": randomUUID() }, JSON.stringify(chatBody(say.text("signed in"))));

  it.each([
    ["without exp", () => jwt({ iat: now() })],
    ["living longer than the maximum", () => jwt({ iat: now(), exp: now() + 300 })],
    ["without iat, expiring later than the maximum from now", () => jwt({ exp: now() + 300 })],
    ["issued in the future to look short-lived", () => jwt({ iat: now() + 3600, exp: now() + 3660 })],
  ])("refuses a token %s (401 invalid_user_jwt)", async (_what, make) => {
    const res = await ask(await make());
    expect(res.status).toBe(401);
    expectErrorShape(res.json);
    expect(res.json.error.code).toBe("invalid_user_jwt");
  });

  it("accepts a token within the maximum, and refuses two tokens at once", async () => {
    const token = await jwt({ iat: now(), exp: now() + 100 });
    const one = await ask(token);
    expect(one.status).toBe(200);
    const two = await ask([token, token]);
    expect(two.status).toBe(400);
    expect(two.json.error.code).toBe("duplicate_header");
  });
});

describe("chat ids named like object prototype members", () => {
  it("work like any other id, also after a restart", async () => {
    const env = scriptedEnv(model.baseURL, { MAX_CONCURRENT_RUNS_PER_USER: "10" });
    const ids = ["__proto__", "constructor", "toString", "hasOwnProperty", "valueOf"];
    const ask = async (base: string, header: string, id: string) => {
      const res = await fetch(`${base}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", [header]: id },
        body: JSON.stringify(chatBody(say.countTurns())),
      });
      const json = await res.json();
      return res.status === 200 ? json.choices[0].message.content : `${res.status} ${JSON.stringify(json)}`;
    };
    let sc = await startSidecar(env);
    try {
      for (const id of ids) expect(await ask(sc.url, "x-openwebui-chat-id", id), id).toBe("turns=1");
      for (const id of ids) expect(await ask(sc.url, "x-openwebui-chat-id", id), id).toBe("turns=2");
      expect(await ask(sc.url, "x-session-id", "__proto__"), "x-session-id").toBe("turns=3");
      await sc.close();
      sc = await startSidecar(env);
      for (const id of ids) expect(await ask(sc.url, "x-openwebui-chat-id", id), `${id} after restart`).toBe(id === "__proto__" ? "turns=4" : "turns=3");
    } finally {
      await sc.close();
    }
  });
});
