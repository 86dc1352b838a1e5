/**
 * An artifact link is a capability: whoever holds it may fetch that one version of that one
 * file until it expires, with no API key (a browser following a link has none). The token
 * carries its claim in the clear and the sidecar's HMAC over it; the sidecar keeps no table
 * of links, so any replica with the key can serve any link.
 */
import { createHmac, timingSafeEqual } from "node:crypto";

export interface ArtifactClaim {
  /** The owner's user hash. */
  user: string;
  /** The file's path in the owner's workspace, when the turn wrote it. */
  path: string;
  /** SHA-256 of the exact bytes, hex: the stored version served. */
  sha256: string;
  contentType: string;
  /** Unix seconds. */
  expiresAt: number;
}

export type Verified = { ok: true; claim: ArtifactClaim } | { ok: false; why: "invalid" | "expired" };

/** Keeps tokens of another purpose (or a later format) from ever verifying as these. */
const CONTEXT = "open-persona artifact v1\n";

export class ArtifactSigner {
  constructor(private readonly key: string) {
    if (key.length < 16) throw new Error("the artifact signing key must be at least 16 characters");
  }

  sign(claim: ArtifactClaim): string {
    const body = Buffer.from(JSON.stringify({ u: claim.user, p: claim.path, h: claim.sha256, c: claim.contentType, e: claim.expiresAt })).toString("base64url");
    return `${body}.${this.mac(body)}`;
  }

  verify(token: string, nowS = Math.floor(Date.now() / 1000)): Verified {
    const dot = token.indexOf(".");
    if (dot <= 0) return { ok: false, why: "invalid" };
    const body = token.slice(0, dot);
    const given = Buffer.from(token.slice(dot + 1), "base64url");
    const expected = Buffer.from(this.mac(body), "base64url");
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { ok: false, why: "invalid" };
    const claim = parseClaim(body);
    if (!claim) return { ok: false, why: "invalid" };
    return claim.expiresAt < nowS ? { ok: false, why: "expired" } : { ok: true, claim };
  }

  private mac(body: string): string {
    return createHmac("sha256", this.key).update(CONTEXT).update(body).digest("base64url");
  }
}

function parseClaim(body: string): ArtifactClaim | undefined {
  try {
    const j = JSON.parse(Buffer.from(body, "base64url").toString("utf8")) as Record<string, unknown>;
    const { u, p, h, c, e } = j;
    // Signed by us, so well-formed; checked anyway, as these become a file path.
    if (typeof u !== "string" || !/^[0-9a-f]{16}$/.test(u)) return undefined;
    if (typeof h !== "string" || !/^[0-9a-f]{64}$/.test(h)) return undefined;
    if (typeof p !== "string" || typeof c !== "string" || typeof e !== "number") return undefined;
    return { user: u, path: p, sha256: h, contentType: c, expiresAt: e };
  } catch {
    return undefined;
  }
}
