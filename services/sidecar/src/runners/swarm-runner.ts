/**
 * `RUNNER_MODE=swarm`: each user's opencode is a Docker Swarm service with one replica, so that
 * runners spread over every node of a cluster instead of one Docker host.
 *
 * Per user `h` (the user hash):
 * - service `open-persona-runner-<h>`, labelled `open-persona.managed=true`,
 *   `open-persona.user=<h>`, `open-persona.network=<RUNNER_NETWORK>` (which deployment owns it),
 *   `open-persona.node=<node id>` and `open-persona.spec-hash`; the same container spec as
 *   docker mode (non-root, all capabilities dropped, read-only root, memory/CPU/PID limits,
 *   the per-user password HMAC(runner secret, h), no published port);
 * - node-local named volumes `open-persona-ws-<h>` (/workspace) and `open-persona-data-<h>`
 *   (/data: opencode's database). They live on one node, so the service is pinned there
 *   (runners/swarm-placement.ts): it comes back to its data after a crash, an idle stop or a
 *   spec change. A shared volume driver (NFS) would let runners move; see the README.
 * - one attachable overlay network, RUNNER_NETWORK, that the sidecar replicas join: a runner
 *   is reached by its service name (Swarm's DNS follows the task wherever and however often
 *   it is replaced). Runners share that network, so one runner can *try* another
 *   runner's API; each answers only to its own user's password (docs/isolation.md).
 *
 * Life of a runner (runner.ts RunnerState): absent → starting (service created or scaled to
 * one, waited for until its task runs and opencode answers over HTTP) → ready → idle-stopped
 * (scaled to zero after RUNNER_IDLE_TIMEOUT: spec and volumes kept) → starting … A task that
 * dies is replaced by Swarm on the same node; the sidecar keeps its connection while the
 * event stream comes back. A service whose spec hash (image, its id, limits, runner
 * environment, password) differs from this sidecar's is updated — one rolling restart, old
 * task first, same volumes — when no turn runs in it. Services are found again by label after
 * a sidecar restart. Workspaces are read through opencode's file API (workspaceReads).
 */
import { createHash } from "node:crypto";
import type Docker from "dockerode";
import { ApiError, RunnerUnavailableError } from "../errors/api-error.js";
import type { Logger } from "../log/logger.js";
import { OpencodeClient, type FetchFn } from "../opencode/client.js";
import { EventHub } from "../opencode/event-hub.js";
import { LocalTurnLocks, type TurnLocks } from "../sessions/chat-sessions.js";
import type { UserSpace } from "../workspace/user-space.js";
import { LABEL_MANAGED, LABEL_SPEC, LABEL_USER } from "./docker-runner.js";
import { engineError as engineFailure, PasswordRejectedError, runnerPassword, stableJson, type EngineFailure } from "./engine-runner-common.js";
import { findSelfContainer, type SelfContainerSetting } from "./docker-self.js";
import { runnerProcessEnv } from "./opencode-config.js";
import { anySessionBusy, RunnerUses } from "./runner-uses.js";
import { waitHealthy } from "./readiness.js";
import type { Runner, RunnerEndpoint, RunnerHealth, RunnerState, RunnerUse } from "./runner.js";
import { nodeFacts, pickNode } from "./swarm-placement.js";

/** The overlay network a service belongs to: tells this deployment's runners from another's. */
export const LABEL_NETWORK = "open-persona.network";
/** The node a runner is pinned to (its volumes are there). */
export const LABEL_NODE = "open-persona.node";
/** The id the runner image had when the spec was written (a rebuilt tag means "update"). */
const LABEL_IMAGE_ID = "open-persona.image-id";
const OPENCODE_PORT = 4096;
const WORKSPACE = "/workspace";
/** Bounded wait for a connected runner's event stream to come back (docker-runner.ts says why). */
const REOPEN_WAIT_MS = 10_000;
const TASK_POLL_MS = 250;

export interface SwarmRunnerOptions {
  /** A manager's engine: services and nodes are managed there. */
  docker: Docker;
  image: string;
  /** RUNNER_NETWORK: the attachable overlay network runners and sidecars share. */
  network: string;
  /** RUNNER_PLACEMENT: constraints every runner obeys (the pinned node is chosen among them). */
  placement: string[];
  /** Where the sidecar runs: its container joins the overlay network at start. */
  selfContainer: SelfContainerSetting;
  /**
   * How requests reach runners. Default: fetch by service name, from a sidecar container on the
   * overlay network. A sidecar process on a host (the tests, `npm run bench`) passes one that
   * routes through a forwarder on that network (test/fixtures/overlay-forwarder.ts).
   */
  fetch?: FetchFn;
  user: string;
  memoryBytes?: number;
  nanoCpus?: number;
  pidsLimit?: number;
  /** 0 = never scale idle runners to zero. */
  idleTimeoutMs: number;
  secret: string | (() => Promise<string>);
  runnerEnv: Record<string, string>;
  startTimeoutMs: number;
  log: Logger;
  /** Serializes a user's create, scale and update across replicas (DATABASE_URL). */
  userLocks?: TurnLocks;
  /** Other replicas' uses of the same runners: the idle policy counts them too. */
  sharedUse?: RunnerUse;
}

interface Live {
  endpoint: RunnerEndpoint;
  /** The task connected to: another one running means Swarm replaced it (the old one is dead). */
  taskId: string;
  lastUsed: number;
  /** Why the service no longer matches the spec: updated once no turn runs in it. */
  stale?: string;
}

type Service = Docker.Service extends { inspect(): Promise<infer T> } ? T : never;

export class SwarmRunner implements Runner {
  readonly mode = "swarm";
  /** A runner may be on any node: its workspace is read through its own file API. */
  readonly workspaceReads = "runner";
  private readonly live = new Map<string, Live>();
  private readonly uses: RunnerUses;
  private readonly starting = new Set<string>();
  private readonly locks: TurnLocks;
  private reaper?: NodeJS.Timeout;
  private stopped = false;
  private secret?: string;
  /** Why this sidecar cannot reach runners (not on the overlay network), for health(). */
  private problem?: string;

  constructor(private readonly opts: SwarmRunnerOptions) {
    this.locks = opts.userLocks ?? new LocalTurnLocks();
    this.uses = new RunnerUses(opts.log, opts.sharedUse);
  }

  static serviceName(hash: string): string {
    return `open-persona-runner-${hash}`;
  }

  static workspaceVolume(hash: string): string {
    return `open-persona-ws-${hash}`;
  }

  static dataVolume(hash: string): string {
    return `open-persona-data-${hash}`;
  }

  /**
   * Makes sure of the overlay network and that this sidecar is on it, then adopts the runner
   * services already running (in the background: a slow one must not hold up the start).
   */
  async start(): Promise<void> {
    try {
      const { secret } = this.opts;
      this.secret = typeof secret === "string" ? secret : await secret();
      await this.ensureNetwork();
      if (!this.opts.fetch) await this.joinNetwork();
      const services = await this.opts.docker.listServices({ filters: { label: [`${LABEL_MANAGED}=true`, `${LABEL_NETWORK}=${this.opts.network}`] } });
      const imageId = await this.currentImageId();
      const adopt = services.filter((s) => replicas(s) > 0 && s.Spec?.Labels?.[LABEL_USER]);
      // One at a time: a sidecar booting with a new spec must not roll every runner at once.
      void (async () => {
        for (const s of adopt) if (!this.stopped) await this.adopt(s.Spec!.Labels![LABEL_USER]!, this.staleness(s, imageId));
      })();
    } catch (e) {
      // The engine may answer later: ensure() tries again and answers 503 meanwhile.
      this.opts.log.error({ err: (e as Error).message }, "swarm runner could not start");
    }
    if (this.opts.idleTimeoutMs > 0) {
      const every = Math.max(1000, Math.min(30_000, Math.floor(this.opts.idleTimeoutMs / 4)));
      this.reaper = setInterval(() => void this.stopIdle().catch((e: Error) => this.opts.log.error({ err: e.message }, "idle check failed")), every);
      this.reaper.unref();
    }
  }

  private async adopt(hash: string, stale?: string): Promise<void> {
    const unlock = await this.locks.acquire(hash);
    try {
      if (this.live.has(hash) || this.stopped) return;
      const live = await this.connectOrUpdate(hash, stale);
      this.opts.log.info({ user: hash }, "adopted running runner service");
      await this.refreshIfIdle(hash, live, 0);
    } catch (e) {
      this.opts.log.warn({ user: hash, err: (e as Error).message }, "could not adopt runner service; it is started again on demand");
    } finally {
      unlock();
    }
  }

  /**
   * The user's endpoint: the cached connection while it serves, else the service created,
   * scaled up or updated, and waited for. The caller holds its own use() mark (ChatService
   * takes it first), so a stale service is updated only when no use beyond that one is left.
   */
  async ensure(space: UserSpace): Promise<RunnerEndpoint> {
    const hash = space.hash;
    if (this.stopped) throw new RunnerUnavailableError("The sidecar is shutting down", "shutting_down");
    const unlock = await this.locks.acquire(hash);
    try {
      const cached = this.live.get(hash);
      if (cached && (await this.stillConnected(hash, cached))) {
        cached.lastUsed = Date.now();
        return (await this.refreshIfIdle(hash, cached, 1)).endpoint;
      }
      this.forget(hash);
      this.starting.add(hash);
      return (await this.refreshIfIdle(hash, await this.startAndConnect(hash), 1)).endpoint;
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
    const live = this.live.get(space.hash);
    return live?.endpoint.events.isOpen ? live.endpoint : undefined;
  }

  async state(space: UserSpace): Promise<RunnerState> {
    const hash = space.hash;
    if (this.live.get(hash)?.endpoint.events.isOpen) return "ready";
    if (this.starting.has(hash)) return "starting";
    const service = await this.inspect(hash);
    if (!service) return (await this.everRan(hash)) ? "gone" : "absent";
    // Scaled to zero: by an idle policy (this replica's or another's). Anything else is on its way up.
    return replicas(service) === 0 ? "idle-stopped" : "starting";
  }

  async health(): Promise<RunnerHealth> {
    if (this.problem) return { ready: false, detail: this.problem };
    try {
      await this.opts.docker.ping();
      return { ready: true, detail: `swarm manager up, ${this.live.size} runner service(s) connected` };
    } catch (e) {
      return { ready: false, detail: `docker engine unreachable: ${(e as Error).message}` };
    }
  }

  /** Closes connections; services keep running and are adopted by the next sidecar. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.reaper);
    for (const hash of [...this.live.keys()]) this.forget(hash);
  }

  /**
   * Scales to zero the runners idle past the timeout: no turn of this sidecar's in flight, no
   * session busy in opencode, no use through another replica within the timeout.
   */
  async stopIdle(now = Date.now()): Promise<string[]> {
    const stopped: string[] = [];
    const idle = (hash: string, live: Live) => this.live.get(hash) === live && now - live.lastUsed >= this.opts.idleTimeoutMs && !this.uses.has(hash);
    for (const [hash, live] of [...this.live]) {
      if (!idle(hash, live)) continue;
      const unlock = await this.locks.acquire(hash);
      try {
        if (!idle(hash, live) || (await anySessionBusy(live.endpoint)) || (await this.uses.usedElsewhere(hash, this.opts.idleTimeoutMs))) continue;
        this.forget(hash);
        const service = await this.inspect(hash);
        if (service && replicas(service) > 0) await this.update(service, { ...service.Spec!, Mode: { Replicated: { Replicas: 0 } } });
        // Stopped when this returns, as in the other modes: a scale-up right after must not meet
        // the old task still running (Swarm scales down asynchronously; bounded by its stop grace).
        const until = Date.now() + 15_000;
        while (Date.now() < until && (await this.tasks(hash)).some(isRunning)) await new Promise((r) => setTimeout(r, TASK_POLL_MS));
        this.opts.log.info({ user: hash }, "scaled idle runner service to zero (spec and data kept)");
        stopped.push(hash);
      } catch (e) {
        this.opts.log.warn({ user: hash, err: (e as Error).message }, "could not scale idle runner to zero");
      } finally {
        unlock();
      }
    }
    return stopped;
  }

  /**
   * Whether a cached connection can still serve: its event stream is open, or the service
   * still wants its replica (Swarm is replacing a dead task, or the network blinked) and the
   * stream comes back within a bounded wait.
   */
  private async stillConnected(hash: string, live: Live): Promise<boolean> {
    if (live.endpoint.events.isOpen) return true;
    const service = await this.inspect(hash).catch(() => undefined);
    if (!service || replicas(service) === 0) {
      this.opts.log.info({ user: hash }, "runner service is gone or scaled to zero");
      return false;
    }
    // Replaced by Swarm (its task died): the stream would only come back from the new task.
    const running = (await this.tasks(hash)).filter(isRunning);
    if (running.length && !running.some((t) => t.ID === live.taskId)) {
      this.opts.log.info({ user: hash, from: live.taskId.slice(0, 12), to: running[0]!.ID?.slice(0, 12) }, "runner task was replaced; reconnecting");
      return false;
    }
    if (await live.endpoint.events.waitOpen(REOPEN_WAIT_MS)) return true;
    this.opts.log.warn({ user: hash, waitedMs: REOPEN_WAIT_MS }, "runner event stream did not come back; reconnecting");
    return false;
  }

  /** Updates a stale service when no turn runs in it; else keeps it for now. */
  private async refreshIfIdle(hash: string, live: Live, ownUses: number): Promise<Live> {
    if (!live.stale) return live;
    if (this.uses.count(hash) > ownUses || (await anySessionBusy(live.endpoint))) {
      this.opts.log.debug({ user: hash, reason: live.stale }, "runner service is out of date but busy: updated later");
      return live;
    }
    const service = await this.inspect(hash);
    if (!service) return live;
    return this.updateAndConnect(hash, service, live.stale);
  }

  /**
   * Brings the user's service to one running, healthy replica and connects: created (pinned to
   * a node) when absent; scaled up when idle-stopped (its spec refreshed on the way, as no turn
   * can run in it); connected and marked stale when it runs with an old spec.
   */
  private async startAndConnect(hash: string): Promise<Live> {
    let service = await this.inspect(hash);
    const imageId = await this.currentImageId();
    if (!service) {
      service = await this.create(hash, imageId);
      return this.connect(hash, service);
    }
    const stale = this.staleness(service, imageId);
    if (replicas(service) === 0) {
      const spec = stale ? this.spec(hash, pinnedNode(service), imageId, service) : service.Spec!;
      await this.update(service, { ...spec, Mode: { Replicated: { Replicas: 1 } } });
      this.opts.log.info({ user: hash, refreshed: stale }, "runner service scaled up");
      return this.connect(hash, (await this.inspect(hash)) ?? service);
    }
    return this.connectOrUpdate(hash, stale, service);
  }

  /** Connects to a running service; one whose server rejects this sidecar's password is updated at once. */
  private async connectOrUpdate(hash: string, stale: string | undefined, known?: Service): Promise<Live> {
    const service = known ?? (await this.inspect(hash));
    if (!service) throw new RunnerUnavailableError("Your agent runner was removed while starting", "runner_gone");
    try {
      const live = await this.connect(hash, service);
      live.stale = stale;
      return live;
    } catch (e) {
      if (e instanceof PasswordRejectedError) return this.updateAndConnect(hash, service, "its server rejects the password (RUNNER_SECRET changed)");
      throw e;
    }
  }

  /** Rolls the service onto the current spec (same node, same volumes) and connects to the new task. */
  private async updateAndConnect(hash: string, service: Service, reason: string): Promise<Live> {
    const started = Date.now();
    this.forget(hash);
    const spec = this.spec(hash, pinnedNode(service), await this.currentImageId(), service);
    const before = new Set((await this.tasks(hash)).map((t) => t.ID ?? ""));
    await this.update(service, { ...spec, Mode: { Replicated: { Replicas: 1 } } });
    const live = await this.connect(hash, (await this.inspect(hash)) ?? service, before);
    this.opts.log.info({ user: hash, reason, ms: Date.now() - started }, "runner service updated to the current spec");
    return live;
  }

  /**
   * Waits until the service's task runs (surfacing why it cannot: a missing image, a node that
   * is down), then until opencode answers over HTTP, then opens its event stream.
   */
  private async connect(hash: string, service: Service, replaced = new Set<string>()): Promise<Live> {
    const started = Date.now();
    const deadline = started + this.opts.startTimeoutMs;
    const taskId = await this.waitRunning(hash, service, deadline, replaced);
    const runningMs = Date.now() - started;
    const url = `http://${SwarmRunner.serviceName(hash)}:${OPENCODE_PORT}`;
    const auth = { username: "opencode", password: this.password(hash) };
    const viaFetch = this.opts.fetch ?? fetch;
    const client = new OpencodeClient(url, auth, viaFetch);
    let rejected = false;
    const probe = new OpencodeClient(url, auth, async (input, init) => {
      const res = await viaFetch(input, init);
      if (res.status === 401) rejected = true;
      return res;
    });
    await waitHealthy(probe, Math.max(1000, deadline - Date.now()), () => rejected || this.stopped).catch((e: Error) => {
      if (rejected) throw new PasswordRejectedError();
      this.opts.log.error({ user: hash, err: e.message }, "runner service did not become healthy");
      throw new RunnerUnavailableError(`Your agent runner did not become ready: ${e instanceof ApiError ? e.message : "it did not answer"}`, "runner_timeout");
    });
    const healthyMs = Date.now() - started;
    const events = new EventHub(client, this.opts.log.child({ runner: "swarm", user: hash }));
    events.start();
    if (!(await events.waitOpen(10_000))) {
      events.close();
      throw new RunnerUnavailableError("The runner's event stream did not open", "runner_events");
    }
    // Where a start's time goes (the bench reads these): the task scheduled and running, opencode answering, its events.
    this.opts.log.info({ user: hash, task: taskId.slice(0, 12), runningMs, healthyMs, readyMs: Date.now() - started }, "runner service connected");
    const live: Live = { endpoint: { client, events, directory: WORKSPACE }, taskId, lastUsed: Date.now() };
    this.live.set(hash, live);
    return live;
  }

  /**
   * Polls the service's tasks until exactly one runs, meant to, and is not among `replaced`
   * (after an update or a scale-up, a task still stopping must not answer in its place: the
   * service name resolves to every running task). A task Swarm cannot start says why in its
   * status; a pinned node that is down will not come back by waiting. Returns the task's id.
   */
  private async waitRunning(hash: string, service: Service, deadline: number, replaced: Set<string>): Promise<string> {
    let why = "no task yet";
    while (Date.now() < deadline && !this.stopped) {
      const tasks = await this.tasks(hash);
      const running = tasks.filter(isRunning);
      const [only] = running;
      if (running.length === 1 && only!.DesiredState === "running" && !replaced.has(only!.ID ?? "")) return only!.ID ?? "";
      const failing = tasks.filter((t) => t.Status?.Err).sort((a, b) => (b.UpdatedAt ?? "").localeCompare(a.UpdatedAt ?? ""))[0];
      if (failing?.Status?.Err) why = failing.Status.Err;
      if (/no such image|image .* not found|pull access denied/i.test(why)) {
        this.opts.log.error({ user: hash, image: this.opts.image, err: why }, "runner image missing on its node");
        throw new RunnerUnavailableError(`Runner image ${this.opts.image} is not on the runner's node: load or pull it there`, "runner_image_missing");
      }
      const node = pinnedNode(service);
      if (node && !(await this.nodeUsable(node))) {
        throw new RunnerUnavailableError("The cluster node that holds your agent's workspace is unavailable; try again once it is back", "runner_node_down");
      }
      await new Promise((r) => setTimeout(r, TASK_POLL_MS));
    }
    this.opts.log.error({ user: hash, last: why }, "runner service task did not start in time");
    throw new RunnerUnavailableError(`The agent runner did not start within ${Math.round(this.opts.startTimeoutMs / 1000)} s`, "runner_timeout");
  }

  private async tasks(hash: string): Promise<SwarmTask[]> {
    return (await this.opts.docker.listTasks({ filters: { service: [SwarmRunner.serviceName(hash)] } }).catch((e: EngineFailure) => {
      throw engineError(e);
    })) as SwarmTask[];
  }

  private async nodeUsable(id: string): Promise<boolean> {
    const node = await this.opts.docker
      .getNode(id)
      .inspect()
      .catch((e: EngineFailure) => (e.statusCode === 404 ? undefined : null));
    if (node === null) return true; // the engine did not say: keep waiting
    return !!node && nodeFacts(node).usable;
  }

  /** Creates the user's service, pinned to the node that fits RUNNER_PLACEMENT and holds the fewest runners. */
  private async create(hash: string, imageId: string | undefined): Promise<Service> {
    const { docker, log, placement } = this.opts;
    const [nodes, services] = await Promise.all([
      docker.listNodes().catch((e: EngineFailure) => {
        throw engineError(e);
      }),
      docker.listServices({ filters: { label: [`${LABEL_MANAGED}=true`] } }).catch((e: EngineFailure) => {
        throw engineError(e);
      }),
    ]);
    const load = new Map<string, number>();
    for (const s of services) {
      const n = s.Spec?.Labels?.[LABEL_NODE];
      if (n) load.set(n, (load.get(n) ?? 0) + 1);
    }
    const node = pickNode(nodes.map(nodeFacts), placement, load);
    if (!node) {
      log.error({ placement }, "no ready swarm node satisfies RUNNER_PLACEMENT");
      throw new RunnerUnavailableError("No cluster node can run your agent right now; ask the operator to check RUNNER_PLACEMENT and the nodes", "runner_no_node");
    }
    await docker.createService(this.spec(hash, node.id, imageId)).catch(async (e: EngineFailure) => {
      // 409: another replica created it first (it holds the user's lock only within its database).
      if (e.statusCode !== 409) throw engineError(e);
    });
    const service = await this.inspect(hash);
    if (!service) throw new RunnerUnavailableError("Your agent runner was removed while starting", "runner_gone");
    log.info({ user: hash, node: node.hostname }, "runner service created");
    return service;
  }

  /** `service update` with the version it was read at; one retry when another writer got there first. */
  private async update(service: Service, spec: Docker.ServiceSpec): Promise<void> {
    const attempt = (s: Service) =>
      this.opts.docker.getService(s.ID).update({ _query: { version: s.Version?.Index }, _body: spec } as unknown as Docker.ServiceSpec);
    await attempt(service).catch(async (e: EngineFailure) => {
      if (!/out of sequence/i.test(e.message)) throw engineError(e);
      const fresh = await this.opts.docker.getService(service.ID).inspect();
      await attempt(fresh).catch((e2: EngineFailure) => {
        throw engineError(e2);
      });
    });
  }

  private async inspect(hash: string): Promise<Service | undefined> {
    return this.opts.docker
      .getService(SwarmRunner.serviceName(hash))
      .inspect()
      .catch((e: EngineFailure) => {
        if (e.statusCode === 404) return undefined;
        throw engineError(e);
      });
  }

  /** Whether the user's data volume exists on some node this engine sees (a removed service then means "gone"). */
  private async everRan(hash: string): Promise<boolean> {
    return this.opts.docker
      .getVolume(SwarmRunner.dataVolume(hash))
      .inspect()
      .then(() => true)
      .catch(() => false);
  }

  private staleness(service: Service, imageId: string | undefined): string | undefined {
    const labels = service.Spec?.Labels ?? {};
    const hash = labels[LABEL_USER];
    if (!hash) return "it has no user label";
    if (labels[LABEL_SPEC] !== this.specHash(hash, labels[LABEL_NODE] ?? "")) return "its spec changed (image, limits, runner environment or password)";
    if (imageId && labels[LABEL_IMAGE_ID] && labels[LABEL_IMAGE_ID] !== imageId) return `${this.opts.image} names another image now`;
    return undefined;
  }

  private async currentImageId(): Promise<string | undefined> {
    return this.opts.docker
      .getImage(this.opts.image)
      .inspect()
      .then((i) => i.Id)
      .catch(() => undefined);
  }

  /**
   * The service spec for a user pinned to `node`. An update (`previous`) bumps ForceUpdate so
   * that the task is replaced even when only the image behind the tag changed.
   */
  private spec(hash: string, node: string, imageId: string | undefined, previous?: Service): Docker.ServiceSpec {
    const spec = this.baseSpec(hash, node);
    const task = spec.TaskTemplate as Docker.ContainerTaskSpec;
    const prevForce = (previous?.Spec?.TaskTemplate as Docker.ContainerTaskSpec | undefined)?.ForceUpdate ?? 0;
    return {
      ...spec,
      Labels: { ...spec.Labels, [LABEL_SPEC]: this.specHash(hash, node), ...(imageId ? { [LABEL_IMAGE_ID]: imageId } : {}) },
      TaskTemplate: { ...task, ForceUpdate: previous ? prevForce + 1 : 0 },
    };
  }

  /** Hash of the spec without its own labels; Env order does not count. */
  private specHash(hash: string, node: string): string {
    const spec = this.baseSpec(hash, node);
    const task = spec.TaskTemplate as Docker.ContainerTaskSpec;
    const env = [...(task.ContainerSpec?.Env ?? [])].sort();
    return createHash("sha256")
      .update(stableJson({ ...spec, TaskTemplate: { ...task, ContainerSpec: { ...task.ContainerSpec, Env: env } } }))
      .digest("hex")
      .slice(0, 32);
  }

  private baseSpec(hash: string, node: string): Docker.ServiceSpec {
    const o = this.opts;
    const env = { ...runnerProcessEnv(o.runnerEnv), OPENCODE_SERVER_PASSWORD: this.password(hash), OPENCODE_SERVER_USERNAME: "opencode" };
    return {
      Name: SwarmRunner.serviceName(hash),
      Labels: { [LABEL_MANAGED]: "true", [LABEL_USER]: hash, [LABEL_NETWORK]: o.network, [LABEL_NODE]: node },
      TaskTemplate: {
        ContainerSpec: {
          Image: o.image,
          User: o.user,
          Dir: WORKSPACE,
          Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
          // Not `managed`: docker mode's adoption must never take a swarm task for one of its containers.
          Labels: { [LABEL_USER]: hash, [LABEL_NETWORK]: o.network },
          ReadOnly: true,
          CapabilityDrop: ["ALL"],
          Init: true,
          StopGracePeriod: 10_000_000_000,
          Hosts: ["host-gateway host.docker.internal"],
          Mounts: [
            { Type: "volume", Source: SwarmRunner.workspaceVolume(hash), Target: WORKSPACE, ReadOnly: false },
            { Type: "volume", Source: SwarmRunner.dataVolume(hash), Target: "/data", ReadOnly: false },
            { Type: "tmpfs", Target: "/tmp", TmpfsOptions: { SizeBytes: 512 * 1024 * 1024 } } as Docker.MountSettings,
          ],
        },
        Resources: { Limits: { MemoryBytes: o.memoryBytes, NanoCPUs: o.nanoCpus, Pids: o.pidsLimit } as Docker.ResourceRequirements["Limits"] },
        // Replaced on the same node whenever it dies; Swarm backs off between attempts.
        RestartPolicy: { Condition: "any", Delay: 1_000_000_000 },
        Placement: { Constraints: [...o.placement, `node.id==${node}`] },
        Networks: [{ Target: o.network }],
      },
      Mode: { Replicated: { Replicas: 1 } },
      // Stop first: two opencode processes must never share one database.
      UpdateConfig: { Parallelism: 1, Order: "stop-first", FailureAction: "continue" },
      // DNS round robin, not a virtual IP: the name resolves to the task itself (one replica
      // needs no balancing), and no IPVS is needed in the kernel (it is missing on some hosts).
      EndpointSpec: { Mode: "dnsrr" },
    };
  }

  private async ensureNetwork(): Promise<void> {
    const { docker, network, log } = this.opts;
    const found = await docker
      .getNetwork(network)
      .inspect()
      .catch(() => undefined);
    if (found) {
      if (found.Driver !== "overlay" || !found.Attachable) log.error({ network, driver: found.Driver }, "RUNNER_NETWORK must be an attachable overlay network in swarm mode");
      return;
    }
    await docker.createNetwork({ Name: network, Driver: "overlay", Attachable: true, CheckDuplicate: true, Labels: { [LABEL_MANAGED]: "true" } }).catch((e: EngineFailure) => {
      if (e.statusCode !== 409) throw e;
    });
    log.info({ network }, "created the runners' overlay network");
  }

  /** Runners are reached by service name: only a container on the overlay network resolves it. */
  private async joinNetwork(): Promise<void> {
    const { docker, network, log, selfContainer } = this.opts;
    const self = await findSelfContainer(docker, selfContainer);
    if (!self) {
      this.problem = `the sidecar runs outside a container: it cannot reach runners on the overlay network ${network} (run it as a container or service on that network)`;
      log.error(this.problem);
      return;
    }
    const info = await docker.getContainer(self).inspect();
    const attached = Object.entries(info.NetworkSettings.Networks ?? {}).some(([name, n]) => name === network || n.NetworkID === network);
    if (!attached) {
      await docker.getNetwork(network).connect({ Container: self }).catch((e: EngineFailure) => {
        if (!/already exists/i.test(e.message)) throw e;
      });
      log.info({ network }, "sidecar joined the runners' overlay network");
    }
    this.problem = undefined;
  }

  private forget(hash: string): void {
    const live = this.live.get(hash);
    if (!live) return;
    live.endpoint.events.close();
    this.live.delete(hash);
  }

  private password(hash: string): string {
    return runnerPassword(this.secret, hash);
  }
}

interface SwarmTask {
  ID?: string;
  DesiredState?: string;
  UpdatedAt?: string;
  Status?: { State?: string; Err?: string };
}

/** A task whose container runs (whatever Swarm wants of it: one being stopped still answers). */
function isRunning(t: SwarmTask): boolean {
  return t.Status?.State === "running";
}

function replicas(s: { Spec?: Docker.ServiceSpec }): number {
  return s.Spec?.Mode?.Replicated?.Replicas ?? 0;
}

function pinnedNode(s: Service): string {
  return s.Spec?.Labels?.[LABEL_NODE] ?? "";
}

const engineError = (e: { message?: string }) => engineFailure(e, "The cluster failed to run your agent runner; try again shortly");
