/**
 * The sidecar's configuration: parsed and validated once at boot from the environment.
 * Nothing else in the sidecar reads `process.env`; a bad value stops the process with a
 * message naming the variable.
 */
import fs from "node:fs";
import path from "node:path";

export type RunnerMode = "local" | "shared";
export type LogLevel = "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";

export interface Config {
  port: number;
  host: string;
  workspaceRoot: string;
  stateRoot: string;
  runnerMode: RunnerMode;
  /** `shared` mode: where the opencode server is. */
  opencodeBaseUrl?: string;
  opencodeServerPassword?: string;
  opencodeServerUsername: string;
  /** `local` mode: the opencode binary (default: the one `opencode-ai` ships). */
  opencodeBinary?: string;
  /** Environment handed to spawned runners: opencode's own config and provider keys. */
  runnerEnv: Record<string, string>;
  /** Gateway keys (Open WebUI's connection key): requests with one may name their user. */
  gatewayKeys: string[];
  /** Direct-client keys: a request with one *is* that user. */
  userKeys: Map<string, string>;
  /** When set, gateway identity comes only from a valid HS256 `X-OpenWebUI-User-Jwt`. */
  openwebuiJwtSecret?: string;
  logLevel: LogLevel;
  /** Concurrent chat runs allowed per user before 429. */
  maxConcurrentRunsPerUser: number;
  /** Largest accepted request body, in bytes (images arrive base64 inline). */
  maxBodyBytes: number;
  /** Silence on the SSE stream after which a keep-alive comment is sent. */
  keepAliveMs: number;
  /** How long to wait for a runner to become healthy. */
  runnerStartTimeoutMs: number;
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

export function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\./.test(host);
}

/** Variables forwarded to runners: opencode's own settings and model-provider credentials. */
const RUNNER_ENV_PATTERN =
  /^(OPENCODE_(?!SERVER_PASSWORD$|SERVER_USERNAME$|BASE_URL$|BIN$).*|[A-Z0-9_]*_API_KEY|[A-Z0-9_]*_BASE_URL|AWS_.*|AZURE_.*|GOOGLE_.*|VERTEX_.*|OLLAMA_.*|HTTPS?_PROXY|NO_PROXY|https?_proxy|no_proxy)$/;
const SIDECAR_ONLY = new Set(["SIDECAR_API_KEYS", "OPENWEBUI_API_KEY", "OPENWEBUI_JWT_SECRET"]);

export function loadConfig(env: Env = process.env, cwd = process.cwd()): Config {
  const host = env.HOST || "127.0.0.1";
  const gatewayKeys = (env.SIDECAR_API_KEYS ?? "")
    .split(",")
    .map((k) => k.trim())
    .filter(Boolean);
  const userKeys = readUserKeys(env.SIDECAR_USER_KEYS_FILE);
  const runnerMode = oneOf(env, "RUNNER_MODE", ["local", "shared"] as const, "local");
  const opencodeBaseUrl = url(env, "OPENCODE_BASE_URL");
  if (runnerMode === "shared" && !opencodeBaseUrl) {
    throw new ConfigError("OPENCODE_BASE_URL", "is required when RUNNER_MODE=shared");
  }
  if (gatewayKeys.length === 0 && userKeys.size === 0 && !isLoopback(host)) {
    throw new ConfigError(
      "SIDECAR_API_KEYS",
      `HOST=${host} is not loopback: set SIDECAR_API_KEYS or SIDECAR_USER_KEYS_FILE (refusing to serve unauthenticated)`,
    );
  }
  if (env.OPENWEBUI_JWT_SECRET !== undefined && env.OPENWEBUI_JWT_SECRET.length < 16) {
    throw new ConfigError("OPENWEBUI_JWT_SECRET", "must be at least 16 characters");
  }

  const runnerEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (v !== undefined && RUNNER_ENV_PATTERN.test(k) && !SIDECAR_ONLY.has(k)) runnerEnv[k] = v;
  }

  const workspaceRoot = path.resolve(cwd, env.WORKSPACE_ROOT || "./data/workspaces");
  const stateRoot = path.resolve(cwd, env.STATE_ROOT || "./data/state");
  const rel = path.relative(workspaceRoot, stateRoot);
  if (rel === "" || (!rel.startsWith("..") && !path.isAbsolute(rel))) {
    // The agent can write anything in a workspace: its own state must live elsewhere.
    throw new ConfigError("STATE_ROOT", "must not be inside WORKSPACE_ROOT");
  }

  return {
    port: int(env, "PORT", 8000, 0, 65535),
    host,
    workspaceRoot,
    stateRoot,
    runnerMode,
    opencodeBaseUrl,
    opencodeServerPassword: env.OPENCODE_SERVER_PASSWORD || undefined,
    opencodeServerUsername: env.OPENCODE_SERVER_USERNAME || "opencode",
    opencodeBinary: env.OPENCODE_BIN || undefined,
    runnerEnv,
    gatewayKeys,
    userKeys,
    openwebuiJwtSecret: env.OPENWEBUI_JWT_SECRET || undefined,
    logLevel: oneOf(env, "LOG_LEVEL", ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const, "info"),
    maxConcurrentRunsPerUser: int(env, "MAX_CONCURRENT_RUNS_PER_USER", 4, 1, 1000),
    maxBodyBytes: int(env, "MAX_BODY_BYTES", 20 * 1024 * 1024, 1024, 512 * 1024 * 1024),
    keepAliveMs: int(env, "SSE_KEEPALIVE_MS", 15_000, 100, 600_000),
    runnerStartTimeoutMs: int(env, "RUNNER_START_TIMEOUT_MS", 60_000, 1000, 600_000),
  };
}
