/**
 * What the two engine-backed runners (docker-runner.ts, swarm-runner.ts) share: how a runner's
 * server password is derived, how a spec is hashed, and how engine failures reach clients.
 */
import { createHmac } from "node:crypto";
import { RunnerUnavailableError } from "../errors/api-error.js";

/**
 * A user's runner password, HMAC(runner secret, user hash): every replica and every restart
 * derives the same one, and no user's runner can be driven with another user's.
 */
export function runnerPassword(secret: string | undefined, hash: string): string {
  if (!secret) throw new RunnerUnavailableError("The runner backend is not started yet", "runner_not_started");
  return createHmac("sha256", secret).update(`opencode-server-password:${hash}`).digest("base64url");
}

/** The runner answered 401 to the password derived for it: it was made with another secret. */
export class PasswordRejectedError extends RunnerUnavailableError {
  constructor() {
    super("The agent runner rejected the sidecar's credentials", "runner_auth");
  }
}

/** JSON with object keys sorted, so that equal specs always hash alike. */
export function stableJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

export type EngineFailure = Error & { statusCode?: number };

/** The engine's own text (socket paths, image names) goes to the log as `cause`, not to the client. */
export function engineError(e: { message?: string }, what = "The Docker engine failed to run your agent runner; try again shortly"): RunnerUnavailableError {
  if (e instanceof RunnerUnavailableError) return e;
  const err = new RunnerUnavailableError(what, "docker_engine");
  err.cause = { message: e.message ?? "unknown error" };
  return err;
}
