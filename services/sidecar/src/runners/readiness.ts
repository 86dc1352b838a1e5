import { ApiError, RunnerUnavailableError } from "../errors/api-error.js";
import type { OpencodeClient } from "../opencode/client.js";

/**
 * Polls `/global/health` until it answers healthy. Each probe has its own short timeout:
 * a request sent while `opencode serve` is still starting can hang with no answer at all.
 */
export async function waitHealthy(client: OpencodeClient, timeoutMs: number, gaveUp: () => boolean = () => false): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = "no answer";
  while (Date.now() < deadline) {
    if (gaveUp()) throw new RunnerUnavailableError("The agent runner exited while starting", "runner_exited");
    try {
      const h = await client.health(1500);
      if (h.healthy) return;
      last = "unhealthy";
    } catch (e) {
      // Only the sidecar's own wording reaches the client (a parse error would name internals).
      last = e instanceof ApiError ? e.message : "no valid answer";
    }
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new RunnerUnavailableError(`The agent runner did not become ready within ${Math.round(timeoutMs / 1000)} s (${last})`, "runner_timeout");
}
