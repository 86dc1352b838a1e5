/**
 * The baseline: a second `opencode serve` used directly, the way any opencode client does —
 * one long-lived `/global/event` subscription, POST /session, POST /session/{id}/prompt_async,
 * then text deltas until `session.idle`. Same binary and same opencode configuration as the
 * sidecar's runner (runnerProcessEnv), so the only difference measured is the sidecar.
 */
import { randomBytes } from "node:crypto";
import path from "node:path";
import { bundledOpencodeBinary } from "../src/runners/registry.js";
import { opencodeServeEnv } from "../test/fixtures/opencode-server.js";
import { freePort, pollUntil, startChild, type Child } from "./children.js";
import { SIDECAR_DIR } from "./sidecar.js";
import { sseMessages } from "./sse.js";
import { TURN_TIMEOUT_MS, titleFor, type Chat, type TurnResult } from "./turn.js";

interface OpencodeEvent {
  type?: string;
  properties?: {
    sessionID?: string;
    field?: string;
    delta?: string;
    status?: { type?: string };
    error?: { name?: string; data?: { message?: string } };
  };
}

/** Called with each event of one session, or with `undefined` when the stream is lost. */
type SessionListener = (event: OpencodeEvent | undefined, at: number) => void;

export interface LaunchedDirect {
  child: Child;
  ready: Promise<DirectOpencode>;
}

/** Spawns opencode with its own XDG dirs under `root`, tied to this process (bin/tie-to-parent.sh). */
export async function launchDirect(opencodeEnv: Record<string, string>, root: string): Promise<LaunchedDirect> {
  const password = randomBytes(24).toString("base64url");
  const port = await freePort();
  const child = startChild(
    "direct opencode",
    path.join(SIDECAR_DIR, "bin/tie-to-parent.sh"),
    [bundledOpencodeBinary(), "serve", "--hostname", "127.0.0.1", "--port", String(port)],
    { cwd: root, stdinPipe: true, env: opencodeServeEnv(root, opencodeEnv, password) },
  );
  const server = new DirectOpencode(`http://127.0.0.1:${port}`, password);
  const ready = (async () => {
    await pollUntil(async () => (await server.health()).healthy, 60_000, "direct opencode /global/health", child);
    await server.connect();
    return server;
  })();
  return { child, ready };
}

export class DirectOpencode {
  private readonly auth: string;
  private readonly listeners = new Map<string, SessionListener>();
  private readonly events = new AbortController();

  constructor(
    readonly baseUrl: string,
    password: string,
  ) {
    this.auth = "Basic " + Buffer.from(`opencode:${password}`).toString("base64");
  }

  async health(): Promise<{ healthy: boolean; version?: string }> {
    return (await this.request("GET", "/global/health", undefined, undefined, 2000)) as { healthy: boolean; version?: string };
  }

  /** Opens the event stream; resolves once opencode says `server.connected`. */
  async connect(): Promise<void> {
    const res = await fetch(`${this.baseUrl}/global/event`, {
      headers: { authorization: this.auth, accept: "text/event-stream" },
      signal: this.events.signal,
    });
    if (!res.ok || !res.body) throw new Error(`direct opencode /global/event answered ${res.status}`);
    const messages = sseMessages(res.body);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), 10_000);
    });
    const first = await Promise.race([messages.next(), timeout]);
    clearTimeout(timer);
    if (!first || first.done || !first.value.data.includes("server.connected")) throw new Error("direct opencode event stream did not connect");
    void this.pump(messages);
  }

  close(): void {
    this.events.abort();
  }

  newChat(directory: string): Chat {
    let sessionId: string | undefined;
    return {
      turn: async (prompt) => {
        const t0 = performance.now();
        // A new chat pays for its session inside the timed turn, as it does through the sidecar.
        sessionId ??= ((await this.request("POST", "/session", directory, { title: titleFor(prompt) })) as { id: string }).id;
        const wait = this.awaitTurn(sessionId, t0);
        try {
          await this.request("POST", `/session/${sessionId}/prompt_async`, directory, { parts: [{ type: "text", text: prompt }], agent: "build" });
        } catch (e) {
          wait.cancel();
          throw e;
        }
        return wait.result;
      },
    };
  }

  /** Listens to one session (before the prompt is sent) until its turn ends. */
  private awaitTurn(sessionId: string, t0: number): { result: Promise<TurnResult>; cancel(): void } {
    let cancel = () => {};
    const result = new Promise<TurnResult>((resolve, reject) => {
      let ttftMs: number | undefined;
      let chunks = 0;
      let text = "";
      let busy = false;
      let lastAt = 0;
      const gapsMs: number[] = [];
      const timer = setTimeout(() => end(new Error(`direct turn timed out after ${TURN_TIMEOUT_MS} ms`)), TURN_TIMEOUT_MS);
      const end = (outcome: Error | TurnResult) => {
        clearTimeout(timer);
        this.listeners.delete(sessionId);
        if (outcome instanceof Error) reject(outcome);
        else resolve(outcome);
      };
      cancel = () => {
        clearTimeout(timer);
        this.listeners.delete(sessionId);
      };
      this.listeners.set(sessionId, (event, at) => {
        const p = event?.properties;
        switch (event?.type) {
          case undefined:
            return end(new Error("direct opencode event stream lost"));
          case "message.part.delta":
            if (p?.field !== "text" || !p.delta) return;
            ttftMs ??= at - t0;
            if (chunks > 0) gapsMs.push(at - lastAt);
            lastAt = at;
            chunks++;
            text += p.delta;
            return;
          case "session.status":
            if (p?.status?.type === "busy") busy = true;
            return;
          // The same end of turn the sidecar uses: the first idle after the session went busy.
          case "session.idle":
            if (!busy) return;
            if (ttftMs === undefined) return end(new Error("direct turn ended without text"));
            return end({ ttftMs, totalMs: at - t0, chunks, gapsMs, text });
          case "session.error":
            return end(new Error(`direct turn failed: ${p?.error?.name} ${p?.error?.data?.message ?? ""}`));
        }
      });
    });
    return { result, cancel: () => cancel() };
  }

  private async pump(messages: AsyncGenerator<{ data: string; at: number }>): Promise<void> {
    try {
      for await (const { data, at } of messages) {
        const envelope = JSON.parse(data) as { payload?: OpencodeEvent };
        const sessionId = envelope.payload?.properties?.sessionID;
        if (sessionId) this.listeners.get(sessionId)?.(envelope.payload, at);
      }
    } catch {
      /* aborted by close(), or the connection broke: either way the listeners learn below */
    }
    for (const listener of [...this.listeners.values()]) listener(undefined, performance.now());
  }

  private async request(method: string, route: string, directory?: string, body?: unknown, timeoutMs = TURN_TIMEOUT_MS): Promise<unknown> {
    const url = new URL(route, this.baseUrl);
    if (directory) url.searchParams.set("directory", directory);
    const res = await fetch(url, {
      method,
      headers: { authorization: this.auth, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`direct opencode answered ${res.status} to ${method} ${route}: ${text.slice(0, 200)}`);
    return text ? (JSON.parse(text) as unknown) : undefined;
  }
}
