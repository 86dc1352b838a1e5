/**
 * Who is calling. A request is authenticated by its bearer key; only then is the identity
 * it claims trusted:
 * - a user key (SIDECAR_USER_KEYS_FILE) *is* its user; identity headers are ignored;
 * - a gateway key (Open WebUI) names its user with `X-OpenWebUI-User-Id`, or — when
 *   OPENWEBUI_JWT_SECRET is set — only with a valid HS256 `X-OpenWebUI-User-Jwt`;
 * - with no keys configured (loopback only, enforced by config) everyone is the one local user.
 */
import { createHash } from "node:crypto";
import { jwtVerify, type JWTPayload } from "jose";
import { AuthenticationError } from "../errors/api-error.js";
import { singleHeaderValue, type HeaderBag } from "../http/headers.js";
import { userHash } from "../workspace/user-space.js";

export type CallerKind = "gateway" | "user-key" | "local";

export interface Identity {
  /** The raw user id: used for hashing and Open WebUI calls, never logged. */
  userId: string;
  userHash: string;
  via: CallerKind;
}

export interface Caller {
  via: CallerKind;
  /** Absent only for a gateway request that named no user (allowed for /v1/models). */
  identity?: Identity;
  /** Why there is no identity, phrased for the client. */
  missing?: string;
}

export interface AuthOptions {
  gatewayKeys: string[];
  userKeys: Map<string, string>;
  jwtSecret?: string;
  /** Longest accepted JWT lifetime in seconds (OPENWEBUI_JWT_MAX_AGE_S; Open WebUI mints 300 s tokens). */
  jwtMaxAgeS?: number;
}

export const LOCAL_USER_ID = "local";
export const DEFAULT_JWT_MAX_AGE_S = 600;

const sha = (s: string) => createHash("sha256").update(s, "utf8").digest("hex");

export class Authenticator {
  // Keys are held as hashes: lookups never compare secrets byte by byte.
  private readonly gateway: Set<string>;
  private readonly users: Map<string, string>;
  private readonly jwtKey?: Uint8Array;
  private readonly jwtMaxAgeS: number;

  constructor(opts: AuthOptions) {
    this.gateway = new Set(opts.gatewayKeys.map(sha));
    this.users = new Map([...opts.userKeys].map(([k, u]) => [sha(k), u]));
    if (opts.jwtSecret) this.jwtKey = new TextEncoder().encode(opts.jwtSecret);
    this.jwtMaxAgeS = opts.jwtMaxAgeS ?? DEFAULT_JWT_MAX_AGE_S;
  }

  get open(): boolean {
    return this.gateway.size === 0 && this.users.size === 0;
  }

  /**
   * Pass `req.headersDistinct`: a repeated identity header (Authorization, X-OpenWebUI-User-Id,
   * X-OpenWebUI-User-Jwt) names two callers and is refused with a BadRequestError.
   */
  async authenticate(headers: HeaderBag): Promise<Caller> {
    if (this.open) return { via: "local", identity: identity(LOCAL_USER_ID, "local") };

    const auth = singleHeaderValue(headers, "authorization", "Authorization");
    const userHeader = singleHeaderValue(headers, "x-openwebui-user-id", "X-OpenWebUI-User-Id");
    const jwtHeader = singleHeaderValue(headers, "x-openwebui-user-jwt", "X-OpenWebUI-User-Jwt");
    const m = auth?.match(/^Bearer\s+(.+)$/i);
    if (!m) throw new AuthenticationError("Missing bearer API key", "missing_api_key");
    const keyHash = sha(m[1]!.trim());

    const user = this.users.get(keyHash);
    if (user !== undefined) return { via: "user-key", identity: identity(user, "user-key") };
    if (!this.gateway.has(keyHash)) throw new AuthenticationError();

    const userId = this.jwtKey ? await this.userFromJwt(jwtHeader) : userHeader && canonicalUserId(userHeader);
    if (userId) return { via: "gateway", identity: identity(userId, "gateway") };
    return {
      via: "gateway",
      missing: this.jwtKey
        ? "No user identity: this sidecar trusts only a signed X-OpenWebUI-User-Jwt (Open WebUI >= 0.9.6 with FORWARD_USER_INFO_HEADER_JWT_SECRET)"
        : "No user identity: send X-OpenWebUI-User-Id (Open WebUI: ENABLE_FORWARD_USER_INFO_HEADERS=true) or use a per-user key",
    };
  }

  private async userFromJwt(token: string | undefined): Promise<string | undefined> {
    if (!token) return undefined;
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.jwtKey!, { algorithms: ["HS256"], issuer: "open-webui" }));
    } catch {
      throw new AuthenticationError("Invalid or expired X-OpenWebUI-User-Jwt", "invalid_user_jwt");
    }
    // A token that never expires, or lives long, is a password once it leaks (a proxy log,
    // a browser extension): only short-lived ones are taken. An `iat` in the future does not
    // shorten the lifetime (it would let a long-lived token pass as a short one).
    if (typeof payload.exp !== "number") throw new AuthenticationError("X-OpenWebUI-User-Jwt has no expiry (exp)", "invalid_user_jwt");
    const now = Math.floor(Date.now() / 1000);
    const from = typeof payload.iat === "number" ? Math.min(payload.iat, now) : now;
    if (payload.exp - from > this.jwtMaxAgeS) {
      throw new AuthenticationError(`X-OpenWebUI-User-Jwt lives longer than ${this.jwtMaxAgeS} s`, "invalid_user_jwt");
    }
    if (typeof payload.sub !== "string" || !payload.sub) throw new AuthenticationError("X-OpenWebUI-User-Jwt names no user (sub)", "invalid_user_jwt");
    // The same decoding as the plain header: a user keeps their workspace when Open WebUI
    // switches from the plain headers to the JWT.
    return percentDecoded(payload.sub);
  }
}

/**
 * One user, one id, however the header carried it. Open WebUI percent-encodes non-ASCII
 * values; a client sending the id raw sends UTF-8 bytes, which Node reads as Latin-1 (so
 * they are read again as UTF-8). Both come out as the decoded id.
 */
export function canonicalUserId(raw: string): string {
  return percentDecoded(utf8Reread(raw));
}

function utf8Reread(v: string): string {
  if (!/[\x80-\xff]/.test(v) || /[^\x00-\xff]/.test(v)) return v;
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(Buffer.from(v, "latin1"));
  } catch {
    return v; // genuine Latin-1
  }
}

/** A '%' that starts no valid escape sequence is the id's own character ("100%"). */
function percentDecoded(v: string): string {
  if (!v.includes("%")) return v;
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

function identity(userId: string, via: CallerKind): Identity {
  return { userId, userHash: userHash(userId), via };
}
