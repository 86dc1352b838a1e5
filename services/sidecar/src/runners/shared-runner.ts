/**
 * `RUNNER_MODE=shared`: an opencode server someone else runs (OPENCODE_BASE_URL). It must
 * see the workspaces at the same absolute paths as the sidecar (same machine or the same
 * mount), and it is the operator's job to give it the headless-safety permissions (see
 * opencode-config.ts; README shows the config). Isolation between users is that server's.
 */
import type { Logger } from "../log/logger.js";
import { OpencodeClient } from "../opencode/client.js";
import { EventHub } from "../opencode/event-hub.js";
import type { UserSpace } from "../workspace/user-space.js";
import { RunnerUnavailableError } from "../errors/api-error.js";
import { waitHealthy } from "./readiness.js";
import type { Runner, RunnerEndpoint, RunnerHealth, RunnerState } from "./runner.js";

export interface SharedRunnerOptions {
  baseUrl: string;
  username: string;
  password?: string;
  startTimeoutMs: number;
  log: Logger;
}

export class SharedRunner implements Runner {
  readonly mode = "shared";
  /** The shared server is expected beside the sidecar, on its filesystem (WORKSPACE_READS=runner when not). */
  readonly workspaceReads = "disk";
  private readonly client: OpencodeClient;
  private readonly events: EventHub;
  private ready?: Promise<void>;

  constructor(private readonly opts: SharedRunnerOptions) {
    const auth = opts.password ? { username: opts.username, password: opts.password } : undefined;
    this.client = new OpencodeClient(opts.baseUrl, auth);
    this.events = new EventHub(this.client, opts.log.child({ runner: "shared" }));
  }

  async start(): Promise<void> {
    this.events.start();
  }

  async ensure(space: UserSpace): Promise<RunnerEndpoint> {
    if (!this.events.isOpen) {
      this.ready ??= waitHealthy(this.client, this.opts.startTimeoutMs).finally(() => (this.ready = undefined));
      await this.ready;
      if (!(await this.events.waitOpen(5000))) {
        // The stream's last attempt was made while the server was down or booting and may hang
        // until its heartbeat deadline: the server answers now, so try again at once.
        this.events.reconnect();
        if (!(await this.events.waitOpen(10_000))) throw new RunnerUnavailableError("The shared opencode server's event stream did not open", "runner_events");
      }
    }
    return { client: this.client, events: this.events, directory: space.workspaceDir };
  }

  current(space: UserSpace): RunnerEndpoint | undefined {
    return this.events.isOpen ? { client: this.client, events: this.events, directory: space.workspaceDir } : undefined;
  }

  async state(): Promise<RunnerState> {
    if (this.events.isOpen) return "ready";
    return this.ready ? "starting" : "gone";
  }

  /** Never stopped for idleness: the server is not the sidecar's to stop. */
  async stopIdle(): Promise<string[]> {
    return [];
  }

  /** One process for everyone, never stopped for idleness: nothing to track. */
  use(): () => void {
    return () => {};
  }

  async health(): Promise<RunnerHealth> {
    try {
      const h = await this.client.health(1500);
      return { ready: h.healthy && this.events.isOpen, detail: `shared opencode ${h.version ?? "?"}` };
    } catch {
      return { ready: false, detail: "shared opencode server not answering" };
    }
  }

  async stop(): Promise<void> {
    this.events.close();
  }
}
