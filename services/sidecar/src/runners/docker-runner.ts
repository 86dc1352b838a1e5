/**
 * `RUNNER_MODE=docker`: one opencode container per user, through dockerode. This is the mode
 * that isolates users from each other: each container sees only its own user's workspace.
 *
 * Per user `h` (the user hash):
 * - container `open-persona-runner-<h>`, labelled `open-persona.user=<h>` and
 *   `open-persona.managed=true`; non-root, all capabilities dropped, `no-new-privileges`,
 *   read-only root filesystem, memory/CPU/PID limits, no published ports;
 * - mounts: the user's workspace (a host directory) at /workspace, and a per-user named
 *   volume `open-persona-data-<h>` at /data (opencode's database: sessions survive the
 *   container being recreated). Never the workspace root, never the Docker socket;
 * - its opencode server password is HMAC(runner secret, h): a restarted sidecar still knows
 *   it, and another user's container on the same network cannot drive it.
 *
 * Each runner is alone on its user's own bridge network, `<RUNNER_NETWORK>-<h>`, with a subnet
 * from RUNNER_SUBNET_POOL (runners/docker-network.ts): runners cannot reach each other, and the
 * host firewall (scripts/runner-firewall.sh) can tell runner traffic by that pool. The sidecar
 * reaches a runner at its address on that network, joining it first when the sidecar itself
 * runs in a container (SIDECAR_CONTAINER); runners reach the host as `host.docker.internal`.
 * A container still on the shared network RUNNER_NETWORK (made before per-user networks) is
 * recreated on its user's network. RUNNER_RUNTIME (e.g. gVisor's `runsc`) is the OCI runtime.
 * Creating a user's runner is serialized per user; a container that exists (running or not)
 * is adopted, never duplicated; one that died is started again on the next request. Idle
 * runners are stopped (not removed) after RUNNER_IDLE_TIMEOUT; data is never deleted.
 *
 * Each container carries `open-persona.spec-hash`, a hash of the options it was created with
 * (image, limits, runner environment with provider keys and opencode config, password). A
 * container whose hash differs from this sidecar's, whose image tag now names another image,
 * or whose server rejects the password (RUNNER_SECRET or STATE_ROOT changed) is recreated —
 * same name, same data volume, same workspace bind — as soon as no turn runs in it: when it
 * is adopted at start(), or at the user's next request. Until then a busy one keeps serving.
 *
 * A connection whose event stream is reconnecting is kept while its container runs: closing
 * it would end every turn of the user that is still streaming (a final `stream.lost`).
 */
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import type Docker from "dockerode";
import { ApiError, RunnerUnavailableError } from "../errors/api-error.js";
import type { Logger } from "../log/logger.js";
import { OpencodeClient } from "../opencode/client.js";
import { EventHub } from "../opencode/event-hub.js";
import { LocalTurnLocks, type TurnLocks } from "../sessions/chat-sessions.js";
import type { UserSpace } from "../workspace/user-space.js";
import { engineError, PasswordRejectedError, runnerPassword, stableJson, type EngineFailure } from "./engine-runner-common.js";
import { runnerProcessEnv } from "./opencode-config.js";
import { anySessionBusy, RunnerUses } from "./runner-uses.js";
import { waitHealthy } from "./readiness.js";
import { RunnerNetworks, SubnetPoolExhaustedError } from "./docker-network.js";
import { findSelfContainer, type SelfContainerSetting } from "./docker-self.js";
import type { SubnetPool } from "./docker-subnets.js";
import type { Runner, RunnerEndpoint, RunnerHealth, RunnerState, RunnerUse } from "./runner.js";

export const LABEL_USER = "open-persona.user";
export const LABEL_MANAGED = "open-persona.managed";
/** Hash of the options a container was created with: a different one means "recreate". */
export const LABEL_SPEC = "open-persona.spec-hash";
const OPENCODE_PORT = 4096;
const CONTAINER_WORKSPACE = "/workspace";
/**
 * How long a request waits for a running runner's event stream to come back before the
 * connection is replaced. The same bound as a turn's own wait (chat/agent-run.ts): by then the
 * turns on that stream have given up anyway.
 */
const REOPEN_WAIT_MS = 10_000;
const PASSWORD_CHANGED = "its server rejects the password (RUNNER_SECRET or STATE_ROOT changed)";
/**
 * A user network without a container is removed at start() only when older than this: a
 * younger one may be one that another sidecar on the same engine is about to use.
 */
const NETWORK_PRUNE_AGE_MS = 10 * 60_000;

/** The container is not attached to its user's network (it was created with another one). */
class NotOnNetworkError extends RunnerUnavailableError {
  constructor(network: string) {
    super(`Runner container is not on network ${network}`, "runner_network");
  }
}

export interface DockerRunnerOptions {
  docker: Docker;
  image: string;
  /** RUNNER_NETWORK: the prefix of the per-user network names (and the old shared network). */
  network: string;
  subnetPool: SubnetPool;
  /** OCI runtime for runner containers (HostConfig.Runtime); undefined: the engine's default. */
  runtime?: string;
  /** Where the sidecar itself runs: it joins user networks when in a container. */
  selfContainer: SelfContainerSetting;
  /** The workspace root as the Docker engine sees it (differs when the sidecar is in a container). */
  workspaceHostRoot: string;
  /** `uid:gid` the runner runs as; new workspaces are given to it when the sidecar is root. */
  user: string;
  memoryBytes?: number;
  nanoCpus?: number;
  pidsLimit?: number;
  /** 0 = never stop idle runners. */
  idleTimeoutMs: number;
  /** Derives runners' passwords: the same for every replica and restart (read at start). */
  secret: string | (() => Promise<string>);
  runnerEnv: Record<string, string>;
  startTimeoutMs: number;
  log: Logger;
  /**
   * Serializes a user's runner start, stop and recreation. Default: this process only; with
   * replicas (DATABASE_URL) it must hold across them, or two replicas race to create one
   * user's network and container.
   */
  userLocks?: TurnLocks;
  /** Other replicas' uses of the same runners (DATABASE_URL): the idle reaper counts them too. */
  sharedUse?: RunnerUse;
}

interface Live {
  containerId: string;
  endpoint: RunnerEndpoint;
  lastUsed: number;
  /** Why the container no longer matches the spec: it is recreated once no turn runs in it. */
  stale?: string;
}

export class DockerRunner implements Runner {
  readonly mode = "docker";
  /** Runners share this host's filesystem: their workspaces are bind mounts of it. */
  readonly workspaceReads = "disk";
  private readonly live = new Map<string, Live>();
  private readonly uses: RunnerUses;
  private readonly locks: TurnLocks;
  private reaper?: NodeJS.Timeout;
  private selfId?: Promise<string | undefined>;
  private stopped = false;
  /** Users whose runner this process stopped as idle (their container exits like any stopped one). */
  private readonly idleStopped = new Set<string>();
  /** Users whose runner is being started or connected now. */
  private readonly starting = new Set<string>();
  private secret?: string;
  readonly networks: RunnerNetworks;

  constructor(private readonly opts: DockerRunnerOptions) {
    this.locks = opts.userLocks ?? new LocalTurnLocks();
    // Kept apart from `live`, so that a reconnect does not reset them.
    this.uses = new RunnerUses(opts.log, opts.sharedUse);
    this.networks = new RunnerNetworks({ docker: opts.docker, prefix: opts.network, pool: opts.subnetPool, self: () => this.self(), log: opts.log });
  }

  static containerName(hash: string): string {
    return `open-persona-runner-${hash}`;
  }

  static volumeName(hash: string): string {
    return `open-persona-data-${hash}`;
  }

  /**
   * Checks the engine, removes the networks of users whose container is gone, then adopts the
   * runners already running (by label) in the background: a runner that is slow or broken
   * must not hold up the sidecar's start.
   */
  async start(): Promise<void> {
    try {
      const { secret } = this.opts;
      this.secret = typeof secret === "string" ? secret : await secret();
      await this.checkRuntime();
      await this.networks.prune((hash) => this.containerExists(hash), NETWORK_PRUNE_AGE_MS);
      const running = await this.opts.docker.listContainers({ filters: { label: [`${LABEL_MANAGED}=true`], status: ["running"] } });
      const image = await this.currentImageId();
      const stale: Array<{ hash: string; id: string; reason: string }> = [];
      for (const c of running) {
        const hash = c.Labels[LABEL_USER];
        if (!hash) continue;
        const networks = c.NetworkSettings?.Networks ?? {};
        // On the old shared network: ours, from before per-user networks; moved to its own.
        const shared = !!networks[this.opts.network];
        // Any other network is another deployment: never touched from here.
        if (!networks[this.networks.name(hash)] && !shared) continue;
        const reason = shared ? `it is on the shared network ${this.opts.network}` : this.staleness(hash, c.Labels, c.ImageID, image);
        if (reason) stale.push({ hash, id: c.Id, reason });
        else void this.adopt(hash, c.Id);
      }
      // One at a time: a sidecar booting with a new spec must not restart every runner at once.
      void (async () => {
        for (const c of stale) if (!this.stopped) await this.adopt(c.hash, c.id, c.reason);
      })();
    } catch (e) {
      // The engine may come up later: ensure() retries and answers 503 meanwhile.
      this.opts.log.error({ err: (e as Error).message }, "docker runner could not start");
    }
    if (this.opts.idleTimeoutMs > 0) {
      const every = Math.max(1000, Math.min(30_000, Math.floor(this.opts.idleTimeoutMs / 4)));
      this.reaper = setInterval(() => void this.stopIdle(), every);
      this.reaper.unref();
    }
  }

  /** Connects to a running container; one with a stale spec is recreated if no turn runs in it. */
  private async adopt(hash: string, containerId: string, stale?: string): Promise<void> {
    const unlock = await this.locks.acquire(hash);
    try {
      if (this.live.has(hash) || this.stopped) return;
      const live = await this.connectOrRecreate(hash, containerId, stale);
      if (live.containerId === containerId) this.opts.log.info({ user: hash, container: containerId.slice(0, 12) }, "adopted running runner");
      // No request of the user is in flight here: only opencode itself can say it is busy.
      await this.refreshIfIdle(hash, live, 0);
    } catch (e) {
      this.opts.log.warn({ user: hash, err: (e as Error).message }, "could not adopt runner; it will be restarted on demand");
    } finally {
      unlock();
    }
  }

  /**
   * The user's endpoint: the cached connection while it serves (waiting out a reconnecting
   * event stream), else the container found again, started, created or recreated. Expects the
   * caller to hold its own use() mark (ChatService takes it first): a stale container is
   * recreated here only when no use beyond that one, and no busy session, is left.
   */
  async ensure(space: UserSpace): Promise<RunnerEndpoint> {
    const hash = space.hash;
    const unlock = await this.locks.acquire(hash);
    try {
      const cached = this.live.get(hash);
      if (cached && (await this.stillConnected(hash, cached))) {
        cached.lastUsed = Date.now();
        // The caller's own use() is counted already: any further one is another running turn.
        return (await this.refreshIfIdle(hash, cached, 1, space.workspaceDir)).endpoint;
      }
      // Lost or never seen: find the container again (it may have died or been removed).
      this.forget(hash);
      this.starting.add(hash);
      const live = await this.refreshIfIdle(hash, await this.startAndConnect(space), 1, space.workspaceDir);
      this.idleStopped.delete(hash);
      return live.endpoint;
    } finally {
      this.starting.delete(hash);
      unlock();
    }
  }

  use(space: UserSpace): () => void {
    return this.uses.use(space.hash, () => {
      const live = this.live.get(space.hash);
      if (live) live.lastUsed = Date.now();
    });
  }


  current(space: UserSpace): RunnerEndpoint | undefined {
    return this.live.get(space.hash)?.endpoint;
  }

  async state(space: UserSpace): Promise<RunnerState> {
    const hash = space.hash;
    const live = this.live.get(hash);
    if (live?.endpoint.events.isOpen) return "ready";
    if (this.starting.has(hash)) return "starting";
    const info = await this.opts.docker
      .getContainer(DockerRunner.containerName(hash))
      .inspect()
      .catch((e: EngineFailure) => {
        if (e.statusCode === 404) return undefined;
        throw engineError(e);
      });
    // Removed: its data volume says whether it ever ran.
    if (!info) return (await this.volumeExists(hash)) ? "gone" : "absent";
    // Running but not connected from here (yet): the next ensure() adopts it.
    if (info.State.Running) return "starting";
    // Stopped: by this process's idle policy, or (a sidecar restarted since) cleanly by a stop.
    if (this.idleStopped.has(hash)) return "idle-stopped";
    return !info.State.OOMKilled && (info.State.ExitCode === 0 || info.State.ExitCode === 143) && !live ? "idle-stopped" : "gone";
  }

  async health(): Promise<RunnerHealth> {
    try {
      await this.opts.docker.ping();
      return { ready: true, detail: `docker engine up, ${this.live.size} runner(s) connected` };
    } catch (e) {
      return { ready: false, detail: `docker engine unreachable: ${(e as Error).message}` };
    }
  }

  /** Closes connections; runner containers keep running and are adopted by the next sidecar. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.reaper);
    for (const hash of [...this.live.keys()]) this.forget(hash);
  }

  /**
   * Stops runners idle for longer than the timeout: no turn of the sidecar's in flight, and
   * no session busy in opencode (a run another sidecar started, or one still finishing).
   */
  async stopIdle(now = Date.now()): Promise<string[]> {
    const stopped: string[] = [];
    for (const [hash, live] of [...this.live]) {
      if (now - live.lastUsed < this.opts.idleTimeoutMs || this.uses.has(hash)) continue;
      const unlock = await this.locks.acquire(hash);
      try {
        if (this.live.get(hash) !== live || now - live.lastUsed < this.opts.idleTimeoutMs || this.uses.has(hash)) continue;
        if (await anySessionBusy(live.endpoint)) continue;
        // Used lately through another replica (between its turns opencode looks idle).
        if (await this.uses.usedElsewhere(hash, this.opts.idleTimeoutMs)) continue;
        this.forget(hash);
        this.idleStopped.add(hash);
        await this.opts.docker.getContainer(live.containerId).stop({ t: 10 }).catch(() => {});
        // The network stays with the stopped container; only the sidecar leaves it.
        await this.networks.detachSelf(this.networks.name(hash)).catch((e: Error) => this.opts.log.warn({ user: hash, err: e.message }, "could not leave the user network"));
        this.opts.log.info({ user: hash }, "stopped idle runner (data kept)");
        stopped.push(hash);
      } finally {
        unlock();
      }
    }
    return stopped;
  }

  /**
   * Whether a cached connection can still serve. Its event stream may be reconnecting (a
   * heartbeat missed, a network blip): dropping the connection then would close the stream
   * for good and end the user's running turns, so while the container runs, wait (bounded)
   * for the stream to come back. Only a container that is gone or stopped, or a stream that
   * stays down, means the connection is lost.
   */
  private async stillConnected(hash: string, live: Live): Promise<boolean> {
    if (live.endpoint.events.isOpen) return true;
    const running = await this.opts.docker
      .getContainer(live.containerId)
      .inspect()
      .then((info) => info.State.Running)
      // 404: removed. Any other engine error: the stream is then the better witness.
      .catch((e: { statusCode?: number }) => e.statusCode !== 404);
    if (!running) {
      this.opts.log.info({ user: hash, container: live.containerId.slice(0, 12) }, "runner container is gone or stopped");
      return false;
    }
    if (await live.endpoint.events.waitOpen(REOPEN_WAIT_MS)) return true;
    this.opts.log.warn({ user: hash, waitedMs: REOPEN_WAIT_MS }, "runner event stream did not come back; reconnecting");
    return false;
  }

  /** Recreates a container with a stale spec when no turn runs in it; else keeps it for now. */
  private async refreshIfIdle(hash: string, live: Live, ownUses: number, workspaceDir?: string): Promise<Live> {
    if (!live.stale) return live;
    if (!(await this.currentImageId())) {
      // A container that works beats none: RUNNER_IMAGE names no image (yet).
      this.opts.log.error({ user: hash, reason: live.stale, image: this.opts.image }, "runner container is out of date, but its image is missing: kept");
      return live;
    }
    if (await this.idle(hash, live, ownUses)) return this.recreate(hash, live.containerId, live.stale, workspaceDir);
    this.opts.log.debug({ user: hash, reason: live.stale }, "runner container is out of date but busy: recreated later");
    return live;
  }

  /** No turn runs in the runner: none of this sidecar's beyond `ownUses`, no busy opencode session. */
  private async idle(hash: string, live: Live, ownUses: number): Promise<boolean> {
    if (this.uses.count(hash) > ownUses) return false;
    return !(await anySessionBusy(live.endpoint));
  }

  private forget(hash: string): void {
    const live = this.live.get(hash);
    if (!live) return;
    live.endpoint.events.close();
    this.live.delete(hash);
  }

  private async connect(hash: string, containerId: string): Promise<Live> {
    const info = await this.opts.docker.getContainer(containerId).inspect();
    const network = this.networks.name(hash);
    const ip = info.NetworkSettings.Networks[network]?.IPAddress;
    if (!ip) throw new NotOnNetworkError(network);
    await this.networks.attachSelf(network).catch((e: EngineFailure) => {
      throw engineError(e);
    });
    const url = `http://${ip}:${OPENCODE_PORT}`;
    const auth = { username: "opencode", password: this.password(hash) };
    const client = new OpencodeClient(url, auth);
    // A 401 will not go away by waiting: the container was made with another password.
    let rejected = false;
    const probe = new OpencodeClient(url, auth, async (input, init) => {
      const res = await fetch(input, init);
      if (res.status === 401) rejected = true;
      return res;
    });
    await waitHealthy(probe, this.opts.startTimeoutMs, () => rejected || this.stopped).catch(async (e: Error) => {
      if (rejected) throw new PasswordRejectedError();
      const logs = await this.tail(containerId);
      this.opts.log.error({ user: hash, logs }, "runner did not become healthy");
      throw new RunnerUnavailableError(`Your agent runner did not become ready: ${e instanceof ApiError ? e.message : "it did not answer"}`, "runner_timeout");
    });
    const events = new EventHub(client, this.opts.log.child({ runner: "docker", user: hash }));
    events.start();
    if (!(await events.waitOpen(10_000))) {
      events.close();
      throw new RunnerUnavailableError("The runner's event stream did not open", "runner_events");
    }
    const live: Live = { containerId, endpoint: { client, events, directory: CONTAINER_WORKSPACE }, lastUsed: Date.now() };
    this.live.set(hash, live);
    return live;
  }

  /**
   * Starts the user's container, creating it when it does not exist, and connects to it. A
   * stopped container with a stale spec is replaced before it starts; a running one is
   * returned marked `stale` (the caller recreates it if no turn runs in it).
   */
  private async startAndConnect(space: UserSpace): Promise<Live> {
    const hash = space.hash;
    const { docker, log } = this.opts;
    let info = await docker
      .getContainer(DockerRunner.containerName(hash))
      .inspect()
      .catch((e: { statusCode?: number; message?: string }) => {
        if (e.statusCode === 404) return undefined;
        throw engineError(e);
      });
    const image = await this.currentImageId();
    const stale = info && this.staleness(hash, info.Config.Labels ?? {}, info.Image, image);
    // Stopped, it runs no turn: replace it before it starts (unless there is nothing to replace it with).
    if (info && stale && image && !info.State.Running) {
      await this.remove(hash, info.Id);
      log.info({ user: hash, container: info.Id.slice(0, 12), reason: stale }, "replacing stopped runner container");
      info = undefined;
    }
    const created = !info;
    info ??= await this.create(hash, space.workspaceDir);
    if (!info.State.Running) await this.startIt(hash, info.Id);
    // A container made here has this sidecar's password: a 401 from it is an error, not a stale spec.
    if (created) return this.connect(hash, info.Id);
    return this.connectOrRecreate(hash, info.Id, stale, space.workspaceDir);
  }

  /**
   * Connects to an existing running container. One this sidecar cannot reach (another network)
   * or authenticate to (another password) runs nothing of ours: it is recreated at once.
   */
  private async connectOrRecreate(hash: string, containerId: string, stale: string | undefined, workspaceDir?: string): Promise<Live> {
    try {
      const live = await this.connect(hash, containerId);
      live.stale = stale;
      return live;
    } catch (e) {
      if (e instanceof PasswordRejectedError) return this.recreate(hash, containerId, PASSWORD_CHANGED, workspaceDir);
      if (e instanceof NotOnNetworkError) return this.recreate(hash, containerId, stale ?? `it is not on network ${this.networks.name(hash)}`, workspaceDir);
      throw e;
    }
  }

  /**
   * Replaces a user's container with one made from the current spec. Its data volume and
   * workspace are kept (both live outside the container). The caller holds the user's lock
   * and has made sure that no turn runs in it.
   */
  private async recreate(hash: string, containerId: string, reason: string, workspaceDir?: string): Promise<Live> {
    const started = Date.now();
    this.forget(hash);
    await this.remove(hash, containerId);
    const info = await this.create(hash, workspaceDir);
    await this.startIt(hash, info.Id);
    const live = await this.connect(hash, info.Id);
    this.opts.log.info(
      { user: hash, reason, from: containerId.slice(0, 12), to: info.Id.slice(0, 12), ms: Date.now() - started },
      "runner container recreated",
    );
    return live;
  }

  /** Stops (opencode gets SIGTERM and closes its database) and removes a container; never volumes. */
  private async remove(hash: string, containerId: string): Promise<void> {
    const c = this.opts.docker.getContainer(containerId);
    await c.stop({ t: 10 }).catch((e: { statusCode?: number; message?: string }) => {
      if (e.statusCode !== 304 && e.statusCode !== 404) throw engineError(e);
    });
    await c.remove({ v: false }).catch((e: { statusCode?: number; message?: string }) => {
      if (e.statusCode !== 404) throw engineError(e);
    });
    this.opts.log.debug({ user: hash, container: containerId.slice(0, 12) }, "runner container removed");
  }

  /** Creates the user's container from the current spec (the workspace is prepared when known). */
  private async create(hash: string, workspaceDir?: string): Promise<Docker.ContainerInspectInfo> {
    const { docker, log } = this.opts;
    if (workspaceDir) await this.prepareWorkspace(workspaceDir);
    await this.ensureUserNetwork(hash);
    const container = await docker.createContainer(this.spec(hash)).catch((e: { statusCode?: number; message?: string }) => {
      if (e.statusCode === 409) return docker.getContainer(DockerRunner.containerName(hash)); // created concurrently by another sidecar
      if (e.statusCode === 404) {
        throw new RunnerUnavailableError(
          `Runner image ${this.opts.image} not found: build it with \`npm run build:runner-image\``,
          "runner_image_missing",
        );
      }
      throw engineError(e);
    });
    const info = await container.inspect().catch((e) => {
      throw engineError(e);
    });
    log.info({ user: hash, container: info.Id.slice(0, 12) }, "runner container created");
    return info;
  }

  private async startIt(hash: string, containerId: string): Promise<void> {
    await this.ensureUserNetwork(hash);
    await this.opts.docker
      .getContainer(containerId)
      .start()
      .catch((e: { statusCode?: number; message?: string }) => {
        if (e.statusCode !== 304) throw engineError(e); // 304: already started
      });
    this.opts.log.info({ user: hash, container: containerId.slice(0, 12) }, "runner container started");
  }

  /**
   * Why a container no longer matches this sidecar's spec, or undefined when it does. `imageId`
   * is what the image tag names now (undefined when unknown: the image is then not compared).
   */
  private staleness(hash: string, labels: Record<string, string>, containerImage: string, imageId: string | undefined): string | undefined {
    const label = labels[LABEL_SPEC];
    if (!label) return "it has no spec label (made by an older sidecar)";
    if (label !== this.specHash(hash)) return "its spec changed (image, limits, runner environment or password)";
    if (imageId && containerImage !== imageId) return `${this.opts.image} names another image now`;
    return undefined;
  }

  /** The id of the image RUNNER_IMAGE names now (a rebuilt or re-pulled tag changes it). */
  private async currentImageId(): Promise<string | undefined> {
    return this.opts.docker
      .getImage(this.opts.image)
      .inspect()
      .then((i) => i.Id)
      .catch(() => undefined);
  }

  /** Hash of the create options, without the label that carries it. Env order does not count. */
  private specHash(hash: string): string {
    const { Labels, Env, ...rest } = this.createOptions(hash);
    return createHash("sha256")
      .update(stableJson({ ...rest, Labels, Env: [...(Env ?? [])].sort() }))
      .digest("hex")
      .slice(0, 32);
  }

  private spec(hash: string): Docker.ContainerCreateOptions {
    const options = this.createOptions(hash);
    return { ...options, Labels: { ...options.Labels, [LABEL_SPEC]: this.specHash(hash) } };
  }

  private createOptions(hash: string): Docker.ContainerCreateOptions {
    const o = this.opts;
    const env = {
      ...runnerProcessEnv(o.runnerEnv),
      OPENCODE_SERVER_PASSWORD: this.password(hash),
      OPENCODE_SERVER_USERNAME: "opencode",
    };
    return {
      name: DockerRunner.containerName(hash),
      Image: o.image,
      User: o.user,
      WorkingDir: CONTAINER_WORKSPACE,
      Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
      Labels: { [LABEL_USER]: hash, [LABEL_MANAGED]: "true" },
      HostConfig: {
        Binds: [`${path.join(o.workspaceHostRoot, hash)}:${CONTAINER_WORKSPACE}:rw`],
        Mounts: [{ Type: "volume", Source: DockerRunner.volumeName(hash), Target: "/data", ReadOnly: false }],
        NetworkMode: this.networks.name(hash),
        Runtime: o.runtime,
        CapDrop: ["ALL"],
        SecurityOpt: ["no-new-privileges"],
        ReadonlyRootfs: true,
        Tmpfs: { "/tmp": "rw,nosuid,nodev,size=512m" },
        Memory: o.memoryBytes,
        NanoCpus: o.nanoCpus,
        PidsLimit: o.pidsLimit,
        ExtraHosts: ["host.docker.internal:host-gateway"],
        // An init as PID 1: opencode gets SIGTERM on stop (PID 1 ignores it otherwise, and
        // every stop would wait out the timeout) and the bash tool's orphans are reaped.
        Init: true,
        RestartPolicy: { Name: "no" },
        PortBindings: {},
        PublishAllPorts: false,
      },
    };
  }

  /** The workspace must exist before Docker bind-mounts it, and belong to the runner user. */
  private async prepareWorkspace(dir: string): Promise<void> {
    await fs.mkdir(dir, { recursive: true });
    if (process.getuid?.() === 0) {
      const [uid, gid] = this.opts.user.split(":").map(Number);
      await fs.chown(dir, uid!, gid ?? uid!);
    }
  }

  private password(hash: string): string {
    return runnerPassword(this.secret, hash);
  }

  private async tail(containerId: string): Promise<string> {
    try {
      const buf = (await this.opts.docker.getContainer(containerId).logs({ stdout: true, stderr: true, tail: 20 })) as unknown as Buffer;
      // Strip Docker's 8-byte stream frame headers for a readable log line.
      return buf.toString("utf8").replace(/[\x00-\x08]/g, "").slice(-2000);
    } catch {
      return "";
    }
  }

  private async ensureUserNetwork(hash: string): Promise<void> {
    await this.networks.ensure(hash).catch((e: EngineFailure) => {
      if (e instanceof SubnetPoolExhaustedError) {
        this.opts.log.error({ user: hash, err: e.message }, "cannot create the user network");
        throw new RunnerUnavailableError("No network address is left for a new agent runner; ask the operator to enlarge RUNNER_SUBNET_POOL", "runner_network");
      }
      throw engineError(e);
    });
  }

  /** The sidecar's own container (memoized); a failed lookup is retried at the next use. */
  private self(): Promise<string | undefined> {
    this.selfId ??= findSelfContainer(this.opts.docker, this.opts.selfContainer).then(
      (id) => {
        this.opts.log.info({ container: id?.slice(0, 12) ?? "none (on the host)" }, "sidecar location");
        return id;
      },
      (e: EngineFailure) => {
        this.selfId = undefined;
        this.opts.log.error({ setting: this.opts.selfContainer, err: e.message }, "SIDECAR_CONTAINER: cannot inspect the sidecar's container");
        throw e;
      },
    );
    return this.selfId;
  }

  private async volumeExists(hash: string): Promise<boolean> {
    return this.opts.docker
      .getVolume(DockerRunner.volumeName(hash))
      .inspect()
      .then(() => true)
      .catch(() => false);
  }

  private async containerExists(hash: string): Promise<boolean> {
    return this.opts.docker
      .getContainer(DockerRunner.containerName(hash))
      .inspect()
      .then(() => true)
      .catch((e: EngineFailure) => e.statusCode !== 404);
  }

  /** A runtime the engine does not know fails every container create: say so at boot. */
  private async checkRuntime(): Promise<void> {
    const runtime = this.opts.runtime;
    if (!runtime) return;
    const info = (await this.opts.docker.info()) as { Runtimes?: Record<string, unknown> };
    if (!info.Runtimes?.[runtime]) {
      this.opts.log.error({ runtime, known: Object.keys(info.Runtimes ?? {}) }, "RUNNER_RUNTIME is not registered with the Docker engine (daemon.json \"runtimes\"): runners will not start");
    }
  }
}
