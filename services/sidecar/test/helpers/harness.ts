/**
 * Starts the real sidecar (with a real opencode behind it) against the scripted model, either
 * in this process (fast; logs captured for assertions) or as a child process running the
 * built `dist/main.js` (for restarts, crashes and signals).
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { Server } from "node:http";
import { loadConfig, type Config } from "../../src/config/config.js";
import { createLogger } from "../../src/log/logger.js";
import type { Runner } from "../../src/runners/runner.js";
import { buildSidecar } from "../../src/sidecar.js";
import type { SyncService } from "../../src/sync/sync-service.js";
import { scriptedOpencodeConfig } from "../fixtures/scripted-model.js";

export const SIDECAR_DIR = fileURLToPath(new URL("../..", import.meta.url));

export function tempDir(prefix = "op-test-"): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Environment that points opencode at the scripted model and keeps it offline. */
export function scriptedEnv(modelBaseURL: string, extra: Record<string, string> = {}): Record<string, string> {
  const root = tempDir();
  return {
    WORKSPACE_ROOT: path.join(root, "workspaces"),
    STATE_ROOT: path.join(root, "state"),
    OPENCODE_CONFIG_CONTENT: JSON.stringify(scriptedOpencodeConfig(modelBaseURL)),
    OPENCODE_DISABLE_MODELS_FETCH: "1",
    OPENCODE_DISABLE_LSP_DOWNLOAD: "1",
    LOG_LEVEL: "debug",
    ...extra,
  };
}

export interface InProcessSidecar {
  url: string;
  config: Config;
  runner: Runner;
  sync?: SyncService;
  logs: string[];
  close(): Promise<void>;
}

export async function startSidecar(env: Record<string, string>): Promise<InProcessSidecar> {
  const config = loadConfig({ PORT: "0", ...env });
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logs.push(...chunk.toString("utf8").split("\n").filter(Boolean));
      cb();
    },
  });
  const sidecar = buildSidecar(config, createLogger(config.logLevel, sink));
  await sidecar.start();
  const server: Server = await new Promise((resolve) => {
    // PORT in env picks the port (a peer that must know the URL before the sidecar starts).
    const s = sidecar.app.listen(config.port, "127.0.0.1", () => resolve(s));
  });
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    config,
    runner: sidecar.runner,
    sync: sidecar.sync,
    logs,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
      await sidecar.stop();
    },
  };
}

export interface ChildSidecar {
  url: string;
  proc: ChildProcess;
  logs: string[];
  /** Resolves with the first log line matching `re`. */
  waitForLog(re: RegExp, timeoutMs?: number): Promise<string>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Runs the built sidecar (`npm run build` first) as its own process. */
export async function spawnSidecar(env: Record<string, string>): Promise<ChildSidecar> {
  const proc = spawn(process.execPath, [path.join(SIDECAR_DIR, "dist/main.js")], {
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/tmp", PORT: "0", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: string[] = [];
  const waiters: Array<{ re: RegExp; resolve: (l: string) => void }> = [];
  const onLine = (line: string) => {
    logs.push(line);
    for (const w of [...waiters]) {
      if (w.re.test(line)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  };
  createInterface({ input: proc.stdout! }).on("line", onLine);
  createInterface({ input: proc.stderr! }).on("line", onLine);
  const waitForLog = (re: RegExp, timeoutMs = 60_000) => {
    const seen = logs.find((l) => re.test(l));
    if (seen) return Promise.resolve(seen);
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no log line matching ${re} within ${timeoutMs} ms:\n${logs.slice(-20).join("\n")}`)), timeoutMs);
      waiters.push({
        re,
        resolve: (l) => {
          clearTimeout(timer);
          resolve(l);
        },
      });
    });
  };
  const listening = JSON.parse(await waitForLog(/sidecar listening/)) as { port: number };
  if (!env.RUNNER_MODE || env.RUNNER_MODE === "local") await waitForLog(/local opencode runner ready/);
  return {
    url: `http://127.0.0.1:${listening.port}`,
    proc,
    logs,
    waitForLog,
    stop: async (signal = "SIGTERM") => {
      // Already gone (exited, or killed by a signal: then exitCode stays null).
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      const done = new Promise<number | null>((r) => proc.once("exit", (code) => r(code)));
      proc.kill(signal);
      return done;
    },
  };
}

/** Whether a process is alive (signal 0 probes without killing). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Reads an SSE response body into its `data:` payloads (and comments), with arrival times. */
export async function readSse(res: Response): Promise<Array<{ at: number; data?: string; comment?: string }>> {
  const { EventSourceParserStream } = await import("eventsource-parser/stream");
  const out: Array<{ at: number; data?: string; comment?: string }> = [];
  const stream = res.body!.pipeThrough(new TextDecoderStream()).pipeThrough(
    new EventSourceParserStream({ onComment: (c) => out.push({ at: Date.now(), comment: c.trim() }) }),
  );
  for await (const m of stream) out.push({ at: Date.now(), data: m.data });
  return out;
}

/** All descendant process ids of `pid` (from /proc; Linux only). */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
      // Field 4 (ppid) follows the parenthesised command name, which may contain spaces.
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch {
      /* process ended while we looked */
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const c of children.get(p) ?? []) {
      out.push(c);
      walk(c);
    }
  };
  walk(pid);
  return out;
}

/** The opencode server processes below `pid`. */
export function opencodePids(pid: number): number[] {
  return descendants(pid).filter((p) => {
    try {
      return fs.readFileSync(`/proc/${p}/cmdline`, "utf8").split("\0")[0]!.endsWith("/opencode");
    } catch {
      return false;
    }
  });
}

/**
 * One clean-up step on its own: a failing one (the engine gone, an object already removed) is
 * reported and must not leave the other steps' objects behind.
 */
export async function cleanupStep(what: string, fn: () => unknown): Promise<void> {
  try {
    await fn();
  } catch (e) {
    console.warn(`cleanup: ${what}: ${(e as Error).message}`);
  }
}
