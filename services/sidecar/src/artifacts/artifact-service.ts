/**
 * Artifacts: what the agent made during a turn that a person would want to look at (pages,
 * SVGs, images, PDFs), shown in the chat through links the sidecar signs. At a turn's end
 * `collect` finds them (artifact-finder.ts), keeps the exact bytes (artifact-store.ts) and
 * signs a link to each (artifact-token.ts); `open` serves one link. The links, and the markup
 * or events that show them, are always the sidecar's own: nothing the agent writes becomes a
 * link.
 */
import { createHash } from "node:crypto";
import path from "node:path";
import { GoneError, NotFoundError } from "../errors/api-error.js";
import type { Logger } from "../log/logger.js";
import type { SyncFilter } from "../sync/sync-filter.js";
import { readInside } from "../workspace/read-inside.js";
import type { UserSpace } from "../workspace/user-space.js";
import { changedViewables } from "./artifact-finder.js";
import { viewableType, type ArtifactKind } from "./artifact-kinds.js";
import type { ArtifactStore } from "./artifact-store.js";
import { ArtifactSigner } from "./artifact-token.js";

export interface Artifact {
  /** The file's name (what a download is called); `path` is where it is in the workspace. */
  name: string;
  path: string;
  kind: ArtifactKind;
  contentType: string;
  size: number;
  sha256: string;
  /** The capability in the link `/v1/artifacts/{token}/{name}`. */
  token: string;
}

/** What one turn made: the artifacts shown, and how many more there were beyond the cap. */
export interface TurnArtifacts {
  items: Artifact[];
  more: number;
}

export interface ArtifactServiceOptions {
  filter: SyncFilter;
  store: ArtifactStore;
  /** ARTIFACT_SIGNING_KEY, or one the sidecar made (under STATE_ROOT, or shared in the database). */
  signingKey: () => Promise<string>;
  /** ARTIFACTS_MAX_BYTES: larger files are not shown. */
  maxBytes: number;
  /** ARTIFACTS_MAX_PER_TURN. */
  maxPerTurn: number;
  /** ARTIFACT_URL_TTL_S: how long a link works. */
  ttlS: number;
  /** How long a turn's end may spend looking. */
  collectTimeoutMs: number;
  log: Logger;
}

/** What a valid link serves. */
export interface OpenedArtifact {
  bytes: Buffer;
  name: string;
  contentType: string;
  /** Seconds until the link expires (how long a browser may cache it). */
  maxAgeS: number;
}

const PRUNE_EVERY_MS = 6 * 3_600_000;

export class ArtifactService {
  private pruner?: NodeJS.Timeout;
  private signing?: Promise<ArtifactSigner>;

  constructor(private readonly opts: ArtifactServiceOptions) {}

  /** The viewable files `space`'s workspace gained or changed since `sinceMs`, kept and signed. */
  async collect(space: UserSpace, sinceMs: number, log: Logger): Promise<TurnArtifacts> {
    const { filter, maxBytes, maxPerTurn } = this.opts;
    const deadline = Date.now() + this.opts.collectTimeoutMs;
    const changed = await changedViewables(filter, space.workspaceDir, sinceMs, { maxBytes, deadline });
    const items: Artifact[] = [];
    let next = 0;
    for (; next < changed.length && items.length < maxPerTurn && Date.now() < deadline; next++) {
      const { rel, realPath } = changed[next]!;
      const file = await readInside(space.workspaceDir, realPath, maxBytes);
      const type = file.ok ? viewableType(rel, file.bytes) : undefined;
      if (!file.ok || !type) {
        log.info({ path: rel, reason: file.ok ? "content is not what its name says" : file.reason }, "artifact not shown");
        continue;
      }
      const sha256 = createHash("sha256").update(file.bytes).digest("hex");
      await this.opts.store.put(space.hash, sha256, file.bytes);
      const expiresAt = Math.floor(Date.now() / 1000) + this.opts.ttlS;
      const token = (await this.signer()).sign({ user: space.hash, path: rel, sha256, contentType: type.contentType, expiresAt });
      items.push({ name: path.posix.basename(rel), path: rel, ...type, size: file.size, sha256, token });
    }
    const more = changed.length - next;
    if (items.length || more) log.info({ artifacts: items.length, more }, "artifacts collected");
    return { items, more };
  }

  /** The version a link names; 404 for anything not signed by us (or renamed), 410 once expired. */
  async open(token: string, name: string): Promise<OpenedArtifact> {
    const verified = (await this.signer()).verify(token);
    if (!verified.ok && verified.why === "expired") throw new GoneError("This artifact link has expired", "artifact_expired");
    const notFound = new NotFoundError("No such artifact", "artifact_not_found");
    if (!verified.ok) throw notFound;
    const { claim } = verified;
    if (path.posix.basename(claim.path) !== name) throw notFound;
    const bytes = await this.opts.store.get(claim.user, claim.sha256);
    if (!bytes) throw new NotFoundError("This artifact is no longer stored", "artifact_not_found");
    return { bytes, name, contentType: claim.contentType, maxAgeS: Math.max(0, claim.expiresAt - Math.floor(Date.now() / 1000)) };
  }

  /** The signer, made once its key is known (a key that could not be had is asked for again). */
  private signer(): Promise<ArtifactSigner> {
    this.signing ??= this.opts.signingKey().then(
      (key) => new ArtifactSigner(key),
      (e: unknown) => {
        this.signing = undefined;
        throw e;
      },
    );
    return this.signing;
  }

  /** Prunes versions no link can reach any more, now and every few hours. */
  start(): void {
    const prune = () =>
      void this.opts.store
        .prune((this.opts.ttlS + 3600) * 1000)
        .then((n) => n && this.opts.log.info({ removed: n }, "pruned expired artifacts"))
        .catch((e) => this.opts.log.warn({ err: (e as Error).message }, "could not prune artifacts"));
    prune();
    this.pruner = setInterval(prune, PRUNE_EVERY_MS);
    this.pruner.unref();
  }

  stop(): void {
    clearInterval(this.pruner);
  }
}
