/**
 * The sidecar as its own process (the built dist/main.js), so its CPU and memory can be read
 * from /proc apart from the benchmark client, and a chat client for its streaming API.
 */
import { randomUUID } from "node:crypto";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { pollUntil, startChild, type Child } from "./children.js";
import { sseMessages } from "./sse.js";
import { TURN_TIMEOUT_MS, type Chat, type TurnResult } from "./turn.js";

export const SIDECAR_DIR = fileURLToPath(new URL("..", import.meta.url));

export interface LaunchedSidecar {
  child: Child;
  /** performance.now() just before the process was spawned. */
  spawnedAt: number;
  /** Resolves with the base URL once /readyz says the runner is up. */
  ready: Promise<string>;
}

export interface LaunchOptions {
  /** Shown in error messages (several sidecars run at once in the runner-modes phase). */
  name?: string;
  /** How often /readyz is polled; lower it when the time to readiness is what is measured. */
  readyPollMs?: number;
}

/** Starts `node dist/main.js` on an OS-chosen loopback port (needs LOG_LEVEL ≤ info to learn it). */
export function launchSidecar(env: Record<string, string>, opts: LaunchOptions = {}): LaunchedSidecar {
  const spawnedAt = performance.now();
  const child = startChild(opts.name ?? "sidecar", process.execPath, [path.join(SIDECAR_DIR, "dist/main.js")], {
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/tmp", ...env, HOST: "127.0.0.1", PORT: "0" },
  });
  const ready = (async () => {
    const line = await child.waitForLine(/sidecar listening/, 30_000);
    const { port } = JSON.parse(line) as { port: number };
    const url = `http://127.0.0.1:${port}`;
    const readyz = async () => (await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2000) })).ok;
    await pollUntil(readyz, 60_000, "sidecar /readyz", child, opts.readyPollMs);
    return url;
  })();
  return { child, spawnedAt, ready };
}

interface StreamChunk {
  choices?: Array<{ delta?: { content?: string } }>;
  error?: { message?: string; code?: string };
}

/** A chat as Open WebUI sends it: gateway key + user header, full history, one chat id. */
export class SidecarChat implements Chat {
  private readonly chatId = randomUUID();
  private readonly messages: Array<{ role: "user" | "assistant"; content: string }> = [];

  constructor(
    private readonly url: string,
    private readonly apiKey: string,
    private readonly userId: string,
  ) {}

  async turn(prompt: string): Promise<TurnResult> {
    this.messages.push({ role: "user", content: prompt });
    const t0 = performance.now();
    const res = await fetch(`${this.url}/v1/chat/completions`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${this.apiKey}`,
        "content-type": "application/json",
        "x-openwebui-user-id": this.userId,
        "x-session-id": this.chatId,
      },
      body: JSON.stringify({ model: "open-persona/build", stream: true, messages: this.messages }),
      signal: AbortSignal.timeout(TURN_TIMEOUT_MS),
    });
    if (!res.ok || !res.body) throw new Error(`sidecar answered ${res.status}: ${await res.text()}`);
    let ttftMs: number | undefined;
    let chunks = 0;
    let text = "";
    let lastAt = 0;
    const gapsMs: number[] = [];
    for await (const { data, at } of sseMessages(res.body)) {
      if (data === "[DONE]") {
        if (ttftMs === undefined) throw new Error("sidecar stream ended without content");
        this.messages.push({ role: "assistant", content: text });
        return { ttftMs, totalMs: at - t0, chunks, gapsMs, text };
      }
      const chunk = JSON.parse(data) as StreamChunk;
      if (chunk.error) throw new Error(`sidecar stream error ${chunk.error.code}: ${chunk.error.message}`);
      const content = chunk.choices?.[0]?.delta?.content;
      if (content) {
        ttftMs ??= at - t0;
        if (chunks > 0) gapsMs.push(at - lastAt);
        lastAt = at;
        chunks++;
        text += content;
      }
    }
    throw new Error("sidecar stream ended without [DONE]");
  }
}
