/**
 * Artifacts: what the agent made during a turn that a person would want to look at (pages,
 * SVGs, images, PDFs), shown in the chat through links the sidecar signs. A turn is followed
 * from its start (`follow`); at its end the files it changed are found (on disk by ctime,
 * artifact-finder.ts; through the runner by its file events, turn-changes.ts), their exact
 * bytes kept (artifact-store.ts) and a link to each signed (artifact-token.ts); `open` serves
 * one link. Whichever way they are found, the same rules apply: the workspace rules
 * (sync-filter.ts `admit`), the size cap, kinds by name AND bytes, the per-turn cap. The links, and the markup
 * or events that show them, are always the sidecar's own: nothing the agent writes becomes a
 * link.
 */
import { createHash } from "node:crypto";
import path from "node:path";
import { GoneError, NotFoundError } from "../errors/api-error.js";
import type { Logger } from "../log/logger.js";
import type { RunnerEndpoint } from "../runners/runner.js";
import type { SyncFilter } from "../sync/sync-filter.js";
import { diskWorkspaces } from "../workspace/disk-workspace-files.js";
import type { UserSpace } from "../workspace/user-space.js";
import type { WorkspaceFiles, Workspaces } from "../workspace/workspace-files.js";
import { changedViewables } from "./artifact-finder.js";
import { viewableType, type ArtifactKind } from "./artifact-kinds.js";
import type { ArtifactStore } from "./artifact-store.js";
import { ArtifactSigner } from "./artifact-token.js";
import { TurnChanges, ViewableMemory } from "./turn-changes.js";

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

/** One turn followed from its start; `collect` at its end, `close` in any case. */
export interface TurnWatch {
  collect(log: Logger): Promise<TurnArtifacts>;
  close(): void;
}

export interface ArtifactServiceOptions {
  filter: SyncFilter;
  /** Where workspaces are read (WORKSPACE_READS); default: the sidecar's disk. */
  workspaces?: Workspaces;
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
  /** Runner reads: each user's viewable files as their last turn ended. */
  private readonly viewables = new ViewableMemory();

  constructor(private readonly opts: ArtifactServiceOptions) {}

  /**
   * Follows a turn from its start (call it before the agent runs). On disk nothing is needed
   * but the time (ctimes tell the rest); through the runner, what changed is told by the
   * contents of the viewable files and the runner's file events (turn-changes.ts).
   */
  follow(space: UserSpace, ep: RunnerEndpoint): TurnWatch {
    const sinceMs = Date.now();
    const files = this.workspaces.files(space, ep)!;
    if (files.reads === "disk") return { collect: (log) => this.collect(space, sinceMs, log, files), close: () => {} };
    const { filter, maxBytes } = this.opts;
    const changes = new TurnChanges(ep, files, { user: space.hash, filter, memory: this.viewables, maxBytes });
    return {
      collect: async (log) => {
        const deadline = Date.now() + this.opts.collectTimeoutMs;
        const { paths, by } = await changes.changed(deadline);
        return this.keep(space, files, paths, deadline, log.child({ found: by }));
      },
      close: () => changes.close(),
    };
  }

  /** The viewable files `space`'s workspace gained or changed on disk since `sinceMs` (ctime), kept and signed. */
  async collect(space: UserSpace, sinceMs: number, log: Logger, files: WorkspaceFiles = diskWorkspaces.files(space)!): Promise<TurnArtifacts> {
    const deadline = Date.now() + this.opts.collectTimeoutMs;
    const changed = await changedViewables(this.opts.filter, files, sinceMs, { maxBytes: this.opts.maxBytes, deadline });
    return this.keep(space, files, changed, deadline, log);
  }

  /** Keeps and signs the first `maxPerTurn` of `changed` that are what their names say, within the deadline. */
  private async keep(space: UserSpace, files: WorkspaceFiles, changed: string[], deadline: number, log: Logger): Promise<TurnArtifacts> {
    const { filter, maxBytes, maxPerTurn } = this.opts;
    const items: Artifact[] = [];
    let next = 0;
    for (; next < changed.length && items.length < maxPerTurn && Date.now() < deadline; next++) {
      const rel = changed[next]!;
      // The workspace rules again: events name any path (secrets, ignored ones) and a read
      // through the runner is the only stat it has.
      const file = await filter.admitted(files, rel, maxBytes);
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
    if (items.length || more) log.info({ artifacts: items.length, more, reads: files.reads }, "artifacts collected");
    return { items, more };
  }

  private get workspaces(): Workspaces {
    return this.opts.workspaces ?? diskWorkspaces;
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
