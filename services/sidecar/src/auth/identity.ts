/**
 * Who is calling. A request is authenticated by its bearer key; only then is the identity
 * it claims trusted:
 * - a user key (SIDECAR_USER_KEYS_FILE) *is* its user; identity headers are ignored;
 * - a gateway key (Open WebUI) names its user with `X-OpenWebUI-User-Id`, or — when
 *   OPENWEBUI_JWT_SECRET is set — only with a valid HS256 `X-OpenWebUI-User-Jwt`;
 * - with no keys configured (loopback only, enforced by config) everyone is the one local user.
 */
import { createHash } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import { jwtVerify } from "jose";
import { AuthenticationError, BadRequestError } from "../errors/api-error.js";
import { headerValue as header } from "../http/headers.js";
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
}

export const LOCAL_USER_ID = "local";

const sha = (s: string) => createHash("sha256").update(s, "utf8").digest("hex");

export class Authenticator {
  // Keys are held as hashes: lookups never compare secrets byte by byte.
  private readonly gateway: Set<string>;
  private readonly users: Map<string, string>;
  private readonly jwtKey?: Uint8Array;

  constructor(opts: AuthOptions) {
    this.gateway = new Set(opts.gatewayKeys.map(sha));
    this.users = new Map([...opts.userKeys].map(([k, u]) => [sha(k), u]));
    if (opts.jwtSecret) this.jwtKey = new TextEncoder().encode(opts.jwtSecret);
  }

  get open(): boolean {
    return this.gateway.size === 0 && this.users.size === 0;
  }

  async authenticate(headers: IncomingHttpHeaders): Promise<Caller> {
    if (this.open) return { via: "local", identity: identity(LOCAL_USER_ID, "local") };

    const auth = header(headers, "authorization");
    const m = auth?.match(/^Bearer\s+(.+)$/i);
    if (!m) throw new AuthenticationError("Missing bearer API key", "missing_api_key");
    const keyHash = sha(m[1]!.trim());

    const user = this.users.get(keyHash);
    if (user !== undefined) return { via: "user-key", identity: identity(user, "user-key") };
    if (!this.gateway.has(keyHash)) throw new AuthenticationError();

    const userId = this.jwtKey ? await this.userFromJwt(headers) : decodeHeader(header(headers, "x-openwebui-user-id"));
    if (userId) return { via: "gateway", identity: identity(userId, "gateway") };
    return {
      via: "gateway",
      missing: this.jwtKey
        ? "No user identity: this sidecar trusts only a signed X-OpenWebUI-User-Jwt (Open WebUI >= 0.9.6 with FORWARD_USER_INFO_HEADER_JWT_SECRET)"
        : "No user identity: send X-OpenWebUI-User-Id (Open WebUI: ENABLE_FORWARD_USER_INFO_HEADERS=true) or use a per-user key",
    };
  }

  private async userFromJwt(headers: IncomingHttpHeaders): Promise<string | undefined> {
    const token = header(headers, "x-openwebui-user-jwt");
    if (!token) return undefined;
    try {
      const { payload } = await jwtVerify(token, this.jwtKey!, { algorithms: ["HS256"], issuer: "open-webui" });
      if (typeof payload.sub !== "string" || !payload.sub) throw new Error("no sub");
      return payload.sub;
    } catch {
      throw new AuthenticationError("Invalid or expired X-OpenWebUI-User-Jwt", "invalid_user_jwt");
    }
  }
}

/** Open WebUI percent-encodes non-ASCII header values. */
function decodeHeader(v: string | undefined): string | undefined {
  if (!v) return undefined;
  try {
    return decodeURIComponent(v);
  } catch {
    throw new BadRequestError("X-OpenWebUI-User-Id is not valid percent-encoding", "invalid_user_header");
  }
}

function identity(userId: string, via: CallerKind): Identity {
  return { userId, userHash: userHash(userId), via };
}
