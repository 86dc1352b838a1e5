/**
 * The sidecar's configuration: parsed and validated once at boot from the environment.
 * Nothing else in the sidecar reads `process.env`; a bad value stops the process with a
 * message naming the variable.
 */
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { buildOpencodeConfig } from "../runners/opencode-config.js";
import { parseSubnetPool, type SubnetPool } from "../runners/docker-subnets.js";

export type RunnerMode = "local" | "shared" | "docker" | "swarm";
/** WORKSPACE_READS: where sync and artifacts read workspaces (runners/runner.ts WorkspaceReads); `auto`: the runner mode's own choice. */
export type WorkspaceReadsSetting = "auto" | "disk" | "runner";
export type LogLevel = "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";

export interface Config {
  port: number;
  host: string;
  workspaceRoot: string;
  stateRoot: string;
  runnerMode: RunnerMode;
  workspaceReads: WorkspaceReadsSetting;
  /** `shared` mode: where the opencode server is. */
  opencodeBaseUrl?: string;
  opencodeServerPassword?: string;
  opencodeServerUsername: string;
  /** `local` mode: the opencode binary (default: the one `opencode-ai` ships). */
  opencodeBinary?: string;
  /** `local` mode: recycle opencode when idle above this resident size (it keeps what it grew to). */
  localMaxRssBytes?: number;
  localRecycleCheckMs: number;
  /** `local` mode: bubblewrap sandbox per user — `auto` (when bwrap works), `on` (required), `off`. */
  localSandbox: "auto" | "on" | "off";
  /** The bwrap binary (LOCAL_SANDBOX_BWRAP). */
  bwrapBinary: string;
  /**
   * Each user's runner may use at most this much (RUNNER_MEMORY, RUNNER_CPUS, RUNNER_PIDS):
   * enforced by the engine in docker mode and by cgroups in local mode.
   */
  runnerLimits: { memoryBytes?: number; cpus?: number; pids: number };
  /** Environment handed to spawned runners: opencode's own config and provider keys. */
  runnerEnv: Record<string, string>;
  /** Gateway keys (Open WebUI's connection key): requests with one may name their user. */
  gatewayKeys: string[];
  /** Direct-client keys: a request with one *is* that user. */
  userKeys: Map<string, string>;
  /** When set, gateway identity comes only from a valid HS256 `X-OpenWebUI-User-Jwt`. */
  openwebuiJwtSecret?: string;
  /** Longest accepted `X-OpenWebUI-User-Jwt` lifetime, in seconds (one without `exp` is refused). */
  openwebuiJwtMaxAgeS: number;
  /** Images one request may forward to the agent. */
  maxImagesPerRequest: number;
  logLevel: LogLevel;
  /** Concurrent chat runs allowed per user before 429. */
  maxConcurrentRunsPerUser: number;
  /** Largest accepted request body, in bytes (images arrive base64 inline). */
  maxBodyBytes: number;
  /** Silence on the SSE stream after which a keep-alive comment is sent. */
  keepAliveMs: number;
  /** How long to wait for a runner to become healthy. */
  runnerStartTimeoutMs: number;
  /** Deadlines and retry budget of one agent turn. */
  turn: TurnConfig;
  /** On SIGTERM, how long running turns may go on before they are stopped. */
  shutdownGraceMs: number;
  /** The model the operator configured for opencode (`provider/model`); undefined: opencode's default. */
  opencodeModel?: string;
  docker: DockerRunnerConfig;
  swarm: SwarmRunnerConfig;
  /** Knowledge-base sync; off unless OPENWEBUI_URL and OPENWEBUI_API_KEY are both set. */
  sync?: SyncConfig;
  /** Artifacts shown in the chat (ARTIFACTS=off: none). */
  artifacts?: ArtifactsConfig;
  /** PUBLIC_BASE_URL: how browsers reach the sidecar (artifact links); default: the request's origin. */
  publicBaseUrl?: string;
  /** DATABASE_URL, the pool size, and how long the start waits for the database to take connections (DATABASE_CONNECT_TIMEOUT_S). */
  database?: { url: string; poolMax: number; connectWithinMs: number };
}

export interface ArtifactsConfig {
  maxBytes: number;
  maxPerTurn: number;
  urlTtlS: number;
  /** Signs artifact links; generated and kept under STATE_ROOT when unset. */
  signingKey?: string;
}

export interface TurnConfig {
  idleTimeoutMs: number;
  maxTurnMs: number;
  maxRetries: number;
}

export interface SyncConfig {
  openwebuiUrl: string;
  apiKey: string;
  kbPrefix: string;
  maxBytes: number;
  debounceMs: number;
  maxBackoffMs: number;
  allowHtml: boolean;
}

/** `docker` mode settings (see runners/docker-runner.ts). */
export interface DockerRunnerConfig {
  /** From DOCKER_HOST (unix:// or tcp://); default: the local socket. */
  host?: string;
  image: string;
  /** RUNNER_NETWORK: prefix of the per-user networks `<prefix>-<user hash>` (see docs/isolation.md). */
  network: string;
  /** RUNNER_SUBNET_POOL cut into RUNNER_SUBNET_PREFIX pieces: one subnet per user network. */
  subnetPool: SubnetPool;
  /** RUNNER_RUNTIME: OCI runtime of runner containers (e.g. `runsc`); undefined: the engine's default. */
  runtime?: string;
  /** SIDECAR_CONTAINER: `auto` (detect), `none` (on the host) or the sidecar's container name/id. */
  selfContainer: string;
  /** Where the Docker engine finds WORKSPACE_ROOT (differs when the sidecar runs in a container). */
  workspaceHostRoot: string;
  user: string;
  memoryBytes?: number;
  nanoCpus?: number;
  pidsLimit?: number;
  idleTimeoutMs: number;
  /** Derives each runner's server password; generated and kept under STATE_ROOT when unset. */
  secret?: string;
}

/**
 * `swarm` mode settings (see runners/swarm-runner.ts); the runner spec itself (image, user,
 * limits, idle timeout, secret) is docker mode's, and RUNNER_NETWORK names the overlay network.
 */
export interface SwarmRunnerConfig {
  /** RUNNER_PLACEMENT: Swarm placement constraints every runner service gets (e.g. `node.labels.runners==true`). */
  placement: string[];
}

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = "ConfigError";
  }
}

type Env = Record<string, string | undefined>;

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!/^\d+$/.test(raw.trim())) throw new ConfigError(name, `must be an integer, got "${raw}"`);
  const n = Number(raw);
  if (n < min || n > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${n}`);
  return n;
}

function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[], fallback: T): T {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new ConfigError(name, `must be one of ${allowed.join(", ")}, got "${raw}"`);
  }
  return raw as T;
}

function url(env: Env, name: string): string | undefined {
  const raw = env[name];
  if (!raw) return undefined;
  try {
    const u = new URL(raw);
    if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error();
    return raw.replace(/\/+$/, "");
  } catch {
    throw new ConfigError(name, `must be an http(s) URL, got "${raw}"`);
  }
}

function readUserKeys(file: string | undefined): Map<string, string> {
  const keys = new Map<string, string>();
  if (!file) return keys;
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new ConfigError("SIDECAR_USER_KEYS_FILE", `cannot read JSON from ${file}: ${(e as Error).message}`);
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new ConfigError("SIDECAR_USER_KEYS_FILE", `must hold an object {"<api key>": "<user id>"}`);
  }
  for (const [key, user] of Object.entries(parsed)) {
    if (typeof user !== "string" || !user || !key) {
      throw new ConfigError("SIDECAR_USER_KEYS_FILE", "every entry must map a non-empty key to a non-empty user id");
    }
    keys.set(key, user);
  }
  return keys;
}

/** "512m", "2g", "1048576" → bytes. */
function bytes(env: Env, name: string): number | undefined {
  const raw = env[name]?.trim();
  if (!raw) return undefined;
  const m = /^(\d+(?:\.\d+)?)\s*([kmg]?)i?b?$/i.exec(raw);
  if (!m) throw new ConfigError(name, `must be a size like 512m or 2g, got "${raw}"`);
  const mult = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2]!.toLowerCase() as "" | "k" | "m" | "g"];
  const n = Math.floor(Number(m[1]) * mult);
  if (n < 6 * 1024 * 1024) throw new ConfigError(name, "must be at least 6m (Docker's minimum)");
  return n;
}

function cpus(env: Env, name: string): number | undefined {
  const raw = env[name]?.trim();
  if (!raw) return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0 || n > 1024) throw new ConfigError(name, `must be a positive number of CPUs, got "${raw}"`);
  return Math.round(n * 1e9);
}

export function isLoopback(host: string): boolean {
  if (host === "localhost") return true;
  // Only literal addresses: a name like "127.example.com" resolves through DNS.
  if (net.isIP(host) === 4) return host.startsWith("127.");
  return host === "::1";
}

/** Whether `child` is `parent` or lies below it. */
function isInside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel === "" || (rel !== ".." && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel));
}

/** Variables forwarded to runners: opencode's own settings and model-provider credentials. */
const RUNNER_ENV_PATTERN =
  /^(OPENCODE_(?!SERVER_PASSWORD$|SERVER_USERNAME$|BASE_URL$|BIN$).*|[A-Z0-9_]*_API_KEY|[A-Z0-9_]*_BASE_URL|AWS_.*|AZURE_.*|GOOGLE_.*|VERTEX_.*|OLLAMA_.*|HTTPS?_PROXY|NO_PROXY|https?_proxy|no_proxy)$/;
const SIDECAR_ONLY = new Set([
  "SIDECAR_API_KEYS",
  "OPENWEBUI_API_KEY",
  "OPENWEBUI_JWT_SECRET",
  "RUNNER_SECRET",
  "OPENCODE_BASE_URL",
  "OPENCODE_SERVER_PASSWORD",
  "ARTIFACT_SIGNING_KEY",
  "DATABASE_URL",
  // Paths, but of the secrets above.
  "SIDECAR_API_KEYS_FILE",
  "OPENWEBUI_API_KEY_FILE",
  "OPENWEBUI_JWT_SECRET_FILE",
  "RUNNER_SECRET_FILE",
  "OPENCODE_SERVER_PASSWORD_FILE",
  "ARTIFACT_SIGNING_KEY_FILE",
  "DATABASE_URL_FILE",
]);

function dockerUser(env: Env): string {
  const raw = env.RUNNER_USER || "1000:1000";
  if (!/^\d+(:\d+)?$/.test(raw)) throw new ConfigError("RUNNER_USER", `must be uid or uid:gid (numeric), got "${raw}"`);
  if (/^0(:|$)/.test(raw)) throw new ConfigError("RUNNER_USER", "runners must not run as root");
  return raw;
}

/**
 * Secrets that may come from a file instead (`<NAME>_FILE`, as Docker and Kubernetes mount
 * them), so they need not sit in the sidecar's environment. A runner never gets either form.
 */
const SECRET_FILE_VARS = ["SIDECAR_API_KEYS", "OPENWEBUI_JWT_SECRET", "RUNNER_SECRET", "OPENWEBUI_API_KEY", "OPENCODE_SERVER_PASSWORD", "ARTIFACT_SIGNING_KEY", "DATABASE_URL"] as const;

/** `env` with each `<NAME>_FILE` read into `<NAME>` (one trailing newline dropped). */
export function withSecretFiles(env: Env): Env {
  const out: Env = { ...env };
  for (const name of SECRET_FILE_VARS) {
    const file = env[`${name}_FILE`];
    if (!file) continue;
    if (env[name]) throw new ConfigError(`${name}_FILE`, `set either ${name} or ${name}_FILE, not both`);
    try {
      out[name] = fs.readFileSync(file, "utf8").replace(/\r?\n$/, "");
    } catch (e) {
      throw new ConfigError(`${name}_FILE`, `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (!out[name]) throw new ConfigError(`${name}_FILE`, `${file} is empty`);
  }
  return out;
}

/** A Docker object name (network, runtime, container): letters, digits, `_.-`. */
function dockerName(env: Env, name: string, fallback: string): string {
  const raw = env[name] || fallback;
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(raw)) throw new ConfigError(name, `must be a Docker name (letters, digits, _ . -), got "${raw}"`);
  return raw;
}

/** RUNNER_SUBNET_POOL (default 10.213.0.0/16) split into /RUNNER_SUBNET_PREFIX (default 28) subnets. */
function subnetPool(env: Env): SubnetPool {
  const prefix = int(env, "RUNNER_SUBNET_PREFIX", 28, 8, 29);
  const cidr = env.RUNNER_SUBNET_POOL || "10.213.0.0/16";
  try {
    return parseSubnetPool(cidr, prefix);
  } catch (e) {
    throw new ConfigError(env.RUNNER_SUBNET_PREFIX && /prefix/.test((e as Error).message) ? "RUNNER_SUBNET_PREFIX" : "RUNNER_SUBNET_POOL", (e as Error).message);
  }
}

/**
 * RUNNER_PLACEMENT: comma-separated Swarm constraints, each `<attribute> == | != <value>` over
 * node.id, node.hostname, node.role, node.platform.os/arch, node.labels.* or engine.labels.*.
 */
function placement(env: Env): string[] {
  const items = (env.RUNNER_PLACEMENT ?? "").split(",").map((c) => c.trim()).filter(Boolean);
  for (const c of items) {
    if (!/^(node\.(id|hostname|role|platform\.os|platform\.arch|labels\.[\w.-]+)|engine\.labels\.[\w.-]+)\s*(==|!=)\s*[\w.:/-]+$/.test(c)) {
      throw new ConfigError("RUNNER_PLACEMENT", `"${c}" is not a constraint like node.labels.runners==true or node.role!=manager`);
    }
  }
  return items;
}

/** DATABASE_URL (it holds a password: never echoed) and the pool's size. */
function databaseConfig(env: Env, runnerMode: RunnerMode): Config["database"] {
  const raw = env.DATABASE_URL;
  if (!raw) return undefined;
  let ok = false;
  try {
    ok = /^postgres(ql)?:$/.test(new URL(raw).protocol);
  } catch {
    /* not a URL */
  }
  if (!ok) throw new ConfigError("DATABASE_URL", "must be a postgres:// or postgresql:// URL");
  if (runnerMode === "local") {
    // Each replica would run its own opencode over the same workspaces and sessions.
    throw new ConfigError("DATABASE_URL", "replicas need RUNNER_MODE=shared, docker or swarm: local mode runs opencode inside each sidecar process, which cannot be shared");
  }
  return { url: raw, poolMax: int(env, "DATABASE_POOL_MAX", 100, 4, 10_000), connectWithinMs: int(env, "DATABASE_CONNECT_TIMEOUT_S", 60, 0, 3600) * 1000 };
}

export function loadConfig(rawEnv: Env = process.env, cwd = process.cwd()): Config {
  const env = withSecretFiles(rawEnv);
  const host = env.HOST || "127.0.0.1";
  const gatewayKeys = (env.SIDECAR_API_KEYS ?? "")
    .split(",")
    .map((k) => k.trim())
    .filter(Boolean);
  const userKeys = readUserKeys(env.SIDECAR_USER_KEYS_FILE);
  const runnerMode = oneOf(env, "RUNNER_MODE", ["local", "shared", "docker", "swarm"] as const, "local");
  const opencodeBaseUrl = url(env, "OPENCODE_BASE_URL");
  if (env.RUNNER_SECRET && env.RUNNER_SECRET.length < 16) {
    throw new ConfigError("RUNNER_SECRET", "must be at least 16 characters");
  }
  if (runnerMode === "shared" && !opencodeBaseUrl) {
    throw new ConfigError("OPENCODE_BASE_URL", "is required when RUNNER_MODE=shared");
  }
  if (gatewayKeys.length === 0 && userKeys.size === 0 && !isLoopback(host)) {
    throw new ConfigError(
      "SIDECAR_API_KEYS",
      `HOST=${host} is not loopback: set SIDECAR_API_KEYS or SIDECAR_USER_KEYS_FILE (refusing to serve unauthenticated)`,
    );
  }
  if (env.ARTIFACT_SIGNING_KEY && env.ARTIFACT_SIGNING_KEY.length < 16) {
    throw new ConfigError("ARTIFACT_SIGNING_KEY", "must be at least 16 characters");
  }
  if (env.OPENWEBUI_JWT_SECRET && env.OPENWEBUI_JWT_SECRET.length < 16) {
    throw new ConfigError("OPENWEBUI_JWT_SECRET", "must be at least 16 characters");
  }

  const runnerEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    // Empty values (compose passes unset variables as "") would read as configured keys.
    if (v && RUNNER_ENV_PATTERN.test(k) && !SIDECAR_ONLY.has(k)) runnerEnv[k] = v;
  }

  // A broken opencode configuration would fail every chat: refuse to start instead.
  let opencodeModel: string | undefined;
  for (const variable of ["OPENCODE_CONFIG", "OPENCODE_CONFIG_CONTENT"] as const) {
    try {
      const built = buildOpencodeConfig({
        configFile: runnerEnv.OPENCODE_CONFIG,
        configContent: variable === "OPENCODE_CONFIG_CONTENT" ? runnerEnv.OPENCODE_CONFIG_CONTENT : undefined,
      });
      opencodeModel = typeof built.model === "string" && built.model ? built.model : undefined;
    } catch (e) {
      throw new ConfigError(variable, `is not a usable opencode configuration: ${(e as Error).message}`);
    }
  }

  const workspaceRoot = path.resolve(cwd, env.WORKSPACE_ROOT || "./data/workspaces");
  const stateRoot = path.resolve(cwd, env.STATE_ROOT || "./data/state");
  // The agent can write anything in a workspace: the sidecar's state must not be reachable
  // from one, nor a workspace from the state tree.
  if (isInside(stateRoot, workspaceRoot)) throw new ConfigError("STATE_ROOT", "must not be inside WORKSPACE_ROOT");
  if (isInside(workspaceRoot, stateRoot)) throw new ConfigError("WORKSPACE_ROOT", "must not be inside STATE_ROOT");

  const openwebuiUrl = url(env, "OPENWEBUI_URL");
  if (!!openwebuiUrl !== !!env.OPENWEBUI_API_KEY) {
    throw new ConfigError(openwebuiUrl ? "OPENWEBUI_API_KEY" : "OPENWEBUI_URL", "knowledge-base sync needs both OPENWEBUI_URL and OPENWEBUI_API_KEY");
  }
  const sync: SyncConfig | undefined = openwebuiUrl
    ? {
        openwebuiUrl,
        apiKey: env.OPENWEBUI_API_KEY!,
        kbPrefix: env.OPENWEBUI_KB_PREFIX ?? "workspace-",
        maxBytes: int(env, "OPENWEBUI_SYNC_MAX_BYTES", 5 * 1024 * 1024, 1, 1024 * 1024 * 1024),
        debounceMs: int(env, "OPENWEBUI_SYNC_DEBOUNCE_MS", 750, 0, 60_000),
        maxBackoffMs: int(env, "OPENWEBUI_SYNC_MAX_BACKOFF_MS", 60_000, 100, 3_600_000),
        allowHtml: oneOf(env, "OPENWEBUI_SYNC_ALLOW_HTML", ["true", "false"] as const, "false") === "true",
      }
    : undefined;

  const artifacts: ArtifactsConfig | undefined =
    oneOf(env, "ARTIFACTS", ["on", "off"] as const, "on") === "on"
      ? {
          maxBytes: int(env, "ARTIFACTS_MAX_BYTES", 10 * 1024 * 1024, 1, 1024 * 1024 * 1024),
          maxPerTurn: int(env, "ARTIFACTS_MAX_PER_TURN", 8, 1, 1000),
          urlTtlS: int(env, "ARTIFACT_URL_TTL_S", 7 * 86_400, 60, 366 * 86_400),
          signingKey: env.ARTIFACT_SIGNING_KEY || undefined,
        }
      : undefined;

  const database = databaseConfig(env, runnerMode);

  return {
    sync,
    artifacts,
    database,
    publicBaseUrl: url(env, "PUBLIC_BASE_URL"),
    port: int(env, "PORT", 8000, 0, 65535),
    host,
    workspaceRoot,
    stateRoot,
    runnerMode,
    opencodeBaseUrl,
    opencodeServerPassword: env.OPENCODE_SERVER_PASSWORD || undefined,
    opencodeServerUsername: env.OPENCODE_SERVER_USERNAME || "opencode",
    opencodeBinary: env.OPENCODE_BIN || undefined,
    localMaxRssBytes: env.LOCAL_RUNNER_MAX_RSS === "0" ? undefined : (bytes(env, "LOCAL_RUNNER_MAX_RSS") ?? 3 * 1024 ** 3),
    localRecycleCheckMs: int(env, "LOCAL_RUNNER_RECYCLE_CHECK_MS", 30_000, 100, 3_600_000),
    localSandbox: oneOf(env, "LOCAL_SANDBOX", ["auto", "on", "off"] as const, "auto"),
    bwrapBinary: env.LOCAL_SANDBOX_BWRAP || "bwrap",
    runnerLimits: {
      memoryBytes: bytes(env, "RUNNER_MEMORY"),
      cpus: (cpus(env, "RUNNER_CPUS") ?? 0) / 1e9 || undefined,
      // opencode alone runs ~40 threads; a fork bomb must stop long before the host's limit.
      pids: int(env, "RUNNER_PIDS", 1024, 16, 1_000_000),
    },
    runnerEnv,
    gatewayKeys,
    userKeys,
    openwebuiJwtSecret: env.OPENWEBUI_JWT_SECRET || undefined,
    openwebuiJwtMaxAgeS: int(env, "OPENWEBUI_JWT_MAX_AGE_S", 600, 1, 86_400),
    maxImagesPerRequest: int(env, "MAX_IMAGES_PER_REQUEST", 16, 0, 1000),
    logLevel: oneOf(env, "LOG_LEVEL", ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const, "info"),
    maxConcurrentRunsPerUser: int(env, "MAX_CONCURRENT_RUNS_PER_USER", 4, 1, 1000),
    maxBodyBytes: int(env, "MAX_BODY_BYTES", 20 * 1024 * 1024, 1024, 512 * 1024 * 1024),
    keepAliveMs: int(env, "SSE_KEEPALIVE_MS", 15_000, 100, 600_000),
    runnerStartTimeoutMs: int(env, "RUNNER_START_TIMEOUT_MS", 60_000, 1000, 600_000),
    turn: {
      idleTimeoutMs: int(env, "TURN_IDLE_TIMEOUT_MS", 300_000, 100, 24 * 3_600_000),
      maxTurnMs: int(env, "TURN_MAX_MS", 3_600_000, 100, 7 * 24 * 3_600_000),
      maxRetries: int(env, "AGENT_MAX_RETRIES", 2, 0, 5),
    },
    shutdownGraceMs: int(env, "SHUTDOWN_GRACE_MS", 30_000, 0, 3_600_000),
    opencodeModel,
    workspaceReads: oneOf(env, "WORKSPACE_READS", ["auto", "disk", "runner"] as const, "auto"),
    swarm: { placement: placement(env) },
    docker: {
      host: env.DOCKER_HOST || undefined,
      image: env.RUNNER_IMAGE || "open-persona-runner:latest",
      network: dockerName(env, "RUNNER_NETWORK", "open-persona-runners"),
      subnetPool: subnetPool(env),
      runtime: env.RUNNER_RUNTIME ? dockerName(env, "RUNNER_RUNTIME", "") : undefined,
      selfContainer: dockerName(env, "SIDECAR_CONTAINER", "auto"),
      workspaceHostRoot: env.WORKSPACE_HOST_ROOT ? path.resolve(env.WORKSPACE_HOST_ROOT) : workspaceRoot,
      user: dockerUser(env),
      memoryBytes: bytes(env, "RUNNER_MEMORY"),
      nanoCpus: cpus(env, "RUNNER_CPUS"),
      pidsLimit: int(env, "RUNNER_PIDS", 1024, 16, 1_000_000),
      idleTimeoutMs: int(env, "RUNNER_IDLE_TIMEOUT", 1800, 0, 30 * 24 * 3600) * 1000,
      secret: env.RUNNER_SECRET || undefined,
    },
  };
}
