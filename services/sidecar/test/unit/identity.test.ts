import { SignJWT } from "jose";
import { describe, expect, it } from "vitest";
import { Authenticator, LOCAL_USER_ID } from "../../src/auth/identity.js";
import { AuthenticationError, BadRequestError } from "../../src/errors/api-error.js";
import { userHash } from "../../src/workspace/user-space.js";

const GATEWAY = "gw-key-0123456789";
const ALICE_KEY = "sk-alice-0123456789";
const SECRET = "a-jwt-secret-of-32-characters!!!";

const auth = new Authenticator({ gatewayKeys: [GATEWAY, "gw-second"], userKeys: new Map([[ALICE_KEY, "alice"]]) });
const jwtAuth = new Authenticator({ gatewayKeys: [GATEWAY], userKeys: new Map(), jwtSecret: SECRET });

const bearer = (k: string) => ({ authorization: `Bearer ${k}` });

async function token(
  opts: { sub?: string; secret?: string; alg?: string; iss?: string; exp?: string | number | null; iat?: number | null } = {},
): Promise<string> {
  let jwt = new SignJWT(opts.sub === undefined ? {} : { sub: opts.sub })
    .setProtectedHeader({ alg: opts.alg ?? "HS256" })
    .setIssuer(opts.iss ?? "open-webui");
  if (opts.iat !== null) jwt = jwt.setIssuedAt(opts.iat);
  // Like Open WebUI's: 300 s unless told otherwise (null: no exp at all).
  if (opts.exp !== null) jwt = jwt.setExpirationTime(opts.exp ?? "300s");
  return jwt.sign(new TextEncoder().encode(opts.secret ?? SECRET));
}
const nowS = () => Math.floor(Date.now() / 1000);

async function rejects(p: Promise<unknown>, cls: new (...a: any[]) => Error, code?: string): Promise<void> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(cls);
  if (code) expect((e as { code: string }).code).toBe(code);
}

describe("Authenticator (gateway and user keys)", () => {
  it("a gateway key names its user with X-OpenWebUI-User-Id", async () => {
    const c = await auth.authenticate({ ...bearer(GATEWAY), "x-openwebui-user-id": "user-123" });
    expect(c).toEqual({ via: "gateway", identity: { userId: "user-123", userHash: userHash("user-123"), via: "gateway" } });
    expect(c.identity!.userHash).toMatch(/^[0-9a-f]{16}$/);
  });

  it("any configured gateway key works, and the bearer scheme is case-insensitive", async () => {
    const c = await auth.authenticate({ authorization: "bearer   gw-second ", "x-openwebui-user-id": "u" });
    expect(c.identity?.userId).toBe("u");
  });

  it("decodes percent-encoded user ids", async () => {
    const c = await auth.authenticate({ ...bearer(GATEWAY), "x-openwebui-user-id": "J%C3%BCrgen%20%F0%9F%98%80" });
    expect(c.identity?.userId).toBe("Jürgen 😀");
    expect(c.identity?.userHash).toBe(userHash("Jürgen 😀"));
  });

  it("takes a '%' that starts no valid escape as the id's own character", async () => {
    const raw = await auth.authenticate({ ...bearer(GATEWAY), "x-openwebui-user-id": "100%-sure" });
    expect(raw.identity?.userId).toBe("100%-sure");
    const encoded = await auth.authenticate({ ...bearer(GATEWAY), "x-openwebui-user-id": encodeURIComponent("100%-sure") });
    expect(encoded.identity).toEqual(raw.identity);
    expect((await auth.authenticate({ ...bearer(GATEWAY), "x-openwebui-user-id": "%E0%A4%A" })).identity?.userId).toBe("%E0%A4%A");
  });

  it("a user id sent as raw UTF-8 (read by Node as Latin-1) is the same user as its percent-encoded form", async () => {
    const id = "Jürgen Müller 😀";
    const asNodeReadsIt = Buffer.from(id, "utf8").toString("latin1");
    const raw = await auth.authenticate({ ...bearer(GATEWAY), "x-openwebui-user-id": asNodeReadsIt });
    const encoded = await auth.authenticate({ ...bearer(GATEWAY), "x-openwebui-user-id": encodeURIComponent(id) });
    expect(raw.identity).toEqual({ userId: id, userHash: userHash(id), via: "gateway" });
    expect(encoded.identity).toEqual(raw.identity);
    // Genuine Latin-1 (not valid UTF-8 as bytes) stays as it is.
    expect((await auth.authenticate({ ...bearer(GATEWAY), "x-openwebui-user-id": "Jürgen" })).identity?.userId).toBe("Jürgen");
  });

  it.each([
    ["Authorization", { authorization: [`Bearer ${GATEWAY}`, `Bearer ${GATEWAY}`], "x-openwebui-user-id": "u" }],
    ["X-OpenWebUI-User-Id", { ...bearer(GATEWAY), "x-openwebui-user-id": ["alice", "bob"] }],
    ["X-OpenWebUI-User-Jwt", { ...bearer(GATEWAY), "x-openwebui-user-id": "u", "x-openwebui-user-jwt": ["a.b.c", "d.e.f"] }],
  ])("a repeated %s header is a bad request, not a joined identity", async (name, headers) => {
    const e = await auth.authenticate(headers).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(BadRequestError);
    expect(e).toMatchObject({ status: 400, code: "duplicate_header", message: expect.stringContaining(name) });
    // One occurrence, as req.headersDistinct gives it, is fine.
    expect((await auth.authenticate({ ...bearer(GATEWAY), "x-openwebui-user-id": ["alice"] })).identity?.userId).toBe("alice");
  });

  it("a gateway request without a user header has no identity", async () => {
    const none = { via: "gateway", missing: expect.stringMatching(/X-OpenWebUI-User-Id/) };
    expect(await auth.authenticate(bearer(GATEWAY))).toEqual(none);
    expect(await auth.authenticate({ ...bearer(GATEWAY), "x-openwebui-user-id": "   " })).toEqual(none);
  });

  it("a user key is its user: identity headers are ignored", async () => {
    const c = await auth.authenticate({
      ...bearer(ALICE_KEY),
      "x-openwebui-user-id": "mallory",
      "x-openwebui-user-jwt": await token({ sub: "mallory" }),
    });
    expect(c).toEqual({ via: "user-key", identity: { userId: "alice", userHash: userHash("alice"), via: "user-key" } });
  });

  it("a wrong or missing key is an AuthenticationError", async () => {
    await rejects(auth.authenticate({ ...bearer("gw-key-012345678"), "x-openwebui-user-id": "u" }), AuthenticationError, "invalid_api_key");
    await rejects(auth.authenticate({ ...bearer(GATEWAY.toUpperCase()) }), AuthenticationError, "invalid_api_key");
    await rejects(auth.authenticate({ "x-openwebui-user-id": "u" }), AuthenticationError, "missing_api_key");
    await rejects(auth.authenticate({ authorization: `Basic ${GATEWAY}` }), AuthenticationError, "missing_api_key");
    const e = await auth.authenticate(bearer("nope")).catch((x: AuthenticationError) => x);
    expect((e as AuthenticationError).status).toBe(401);
  });

  it("with no keys configured everyone is the local user", async () => {
    const open = new Authenticator({ gatewayKeys: [], userKeys: new Map() });
    expect(open.open).toBe(true);
    const c = await open.authenticate({ "x-openwebui-user-id": "someone-else", ...bearer("whatever") });
    expect(c).toEqual({ via: "local", identity: { userId: LOCAL_USER_ID, userHash: userHash(LOCAL_USER_ID), via: "local" } });
  });
});

describe("Authenticator (JWT mode)", () => {
  it("accepts a valid HS256 token from open-webui", async () => {
    const c = await jwtAuth.authenticate({ ...bearer(GATEWAY), "x-openwebui-user-jwt": await token({ sub: "user-42", exp: "5m" }) });
    expect(c).toEqual({ via: "gateway", identity: { userId: "user-42", userHash: userHash("user-42"), via: "gateway" } });
  });

  it("ignores the plain user-id header", async () => {
    const c = await jwtAuth.authenticate({ ...bearer(GATEWAY), "x-openwebui-user-id": "mallory" });
    expect(c).toEqual({ via: "gateway", missing: expect.stringMatching(/X-OpenWebUI-User-Jwt/) });
    const d = await jwtAuth.authenticate({
      ...bearer(GATEWAY),
      "x-openwebui-user-id": "mallory",
      "x-openwebui-user-jwt": await token({ sub: "user-42" }),
    });
    expect(d.identity?.userId).toBe("user-42");
  });

  it("maps a user to the same workspace as the plain header does (sub decoded alike)", async () => {
    const viaHeader = await auth.authenticate({ ...bearer(GATEWAY), "x-openwebui-user-id": encodeURIComponent("jürgen") });
    for (const sub of ["jürgen", encodeURIComponent("jürgen")]) {
      const viaJwt = await jwtAuth.authenticate({ ...bearer(GATEWAY), "x-openwebui-user-jwt": await token({ sub }) });
      expect(viaJwt.identity?.userHash).toBe(viaHeader.identity?.userHash);
    }
  });

  it("accepts a token living up to the maximum (600 s by default, or jwtMaxAgeS)", async () => {
    const now = nowS();
    const t = await token({ sub: "u", iat: now, exp: now + 600 });
    expect((await jwtAuth.authenticate({ ...bearer(GATEWAY), "x-openwebui-user-jwt": t })).identity?.userId).toBe("u");
    const strict = new Authenticator({ gatewayKeys: [GATEWAY], userKeys: new Map(), jwtSecret: SECRET, jwtMaxAgeS: 60 });
    await rejects(strict.authenticate({ ...bearer(GATEWAY), "x-openwebui-user-jwt": await token({ sub: "u" }) }), AuthenticationError, "invalid_user_jwt");
    const short = await token({ sub: "u", exp: "60s" });
    expect((await strict.authenticate({ ...bearer(GATEWAY), "x-openwebui-user-jwt": short })).identity?.userId).toBe("u");
  });

  it("still requires the gateway key", async () => {
    await rejects(jwtAuth.authenticate({ ...bearer("not-the-key"), "x-openwebui-user-jwt": await token({ sub: "u" }) }), AuthenticationError, "invalid_api_key");
  });

  it.each([
    ["expired", () => token({ sub: "u", exp: Math.floor(Date.now() / 1000) - 120 })],
    ["signed with another secret", () => token({ sub: "u", secret: "another-secret-of-32-characters!!" })],
    ["HS512 instead of HS256", () => token({ sub: "u", alg: "HS512" })],
    ["from another issuer", () => token({ sub: "u", iss: "evil" })],
    ["without a subject", () => token({})],
    ["unsigned (alg none)", async () => {
      const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
      return `${b64({ alg: "none", typ: "JWT" })}.${b64({ sub: "u", iss: "open-webui" })}.`;
    }],
    ["tampered", async () => {
      const [h, , s] = (await token({ sub: "alice" })).split(".");
      const p = Buffer.from(JSON.stringify({ sub: "admin", iss: "open-webui" })).toString("base64url");
      return `${h}.${p}.${s}`;
    }],
    ["garbage", async () => "not.a.jwt"],
    ["without exp", () => token({ sub: "u", exp: null })],
    ["living longer than the maximum", () => token({ sub: "u", iat: nowS(), exp: nowS() + 601 })],
    ["without iat, expiring later than the maximum from now", () => token({ sub: "u", iat: null, exp: nowS() + 900 })],
    ["issued in the future to look short-lived", () => token({ sub: "u", iat: nowS() + 86_400, exp: nowS() + 86_700 })],
  ])("rejects a token that is %s", async (_what, make) => {
    await rejects(jwtAuth.authenticate({ ...bearer(GATEWAY), "x-openwebui-user-jwt": await make() }), AuthenticationError, "invalid_user_jwt");
  });
});
