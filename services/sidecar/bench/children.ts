/**
 * Child processes the benchmark starts: output kept (bounded) for error messages, a line
 * waiter for readiness, and a stop that always ends in the process being gone.
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";

const TAIL_LINES = 40;

export interface Child {
  readonly pid: number;
  readonly name: string;
  exited(): boolean;
  /** The last lines the process printed. */
  tail(): string;
  /** Resolves with the first output line matching `re` (lines already seen count). */
  waitForLine(re: RegExp, timeoutMs: number): Promise<string>;
  /** SIGTERM, then SIGKILL after a grace period; resolves once the process is gone. */
  stop(): Promise<void>;
}

export interface ChildOptions {
  env: NodeJS.ProcessEnv;
  cwd?: string;
  /** Hold a pipe on stdin (bin/tie-to-parent.sh ends its command when that pipe closes). */
  stdinPipe?: boolean;
}

export function startChild(name: string, command: string, args: string[], opts: ChildOptions): Child {
  const proc = spawn(command, args, { env: opts.env, cwd: opts.cwd, stdio: [opts.stdinPipe ? "pipe" : "ignore", "pipe", "pipe"] });
  const lines: string[] = [];
  const waiters = new Set<{ re: RegExp; resolve: (line: string) => void }>();
  let done = false;
  const exit = new Promise<void>((resolve) => {
    proc.once("exit", () => {
      done = true;
      resolve();
    });
    proc.once("error", (e) => {
      lines.push(`spawn error: ${e.message}`);
      done = true;
      resolve();
    });
  });
  const onLine = (line: string) => {
    lines.push(line);
    if (lines.length > TAIL_LINES) lines.shift();
    for (const w of waiters) if (w.re.test(line)) w.resolve(line);
  };
  createInterface({ input: proc.stdout! }).on("line", onLine);
  createInterface({ input: proc.stderr! }).on("line", onLine);

  const tail = () => lines.join("\n");
  return {
    pid: proc.pid ?? -1,
    name,
    exited: () => done,
    tail,
    waitForLine(re, timeoutMs) {
      const seen = lines.find((l) => re.test(l));
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const waiter = {
          re,
          resolve: (line: string) => {
            finish();
            resolve(line);
          },
        };
        const fail = (why: string) => {
          finish();
          reject(new Error(`${name}: ${why} before printing ${re}\n${tail()}`));
        };
        const timer = setTimeout(() => fail(`${timeoutMs} ms passed`), timeoutMs);
        const finish = () => {
          clearTimeout(timer);
          waiters.delete(waiter);
        };
        waiters.add(waiter);
        void exit.then(() => fail("it exited"));
      });
    },
    async stop() {
      if (done) return;
      proc.kill("SIGTERM");
      const killer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
      await exit;
      clearTimeout(killer);
    },
  };
}

export { freePort } from "../src/runners/free-port.js";

/**
 * Polls `check` every `everyMs` until it returns true; fails after `timeoutMs` or when `child`
 * exits. When the moment of readiness is itself measured, poll finely: the interval is slack.
 */
export async function pollUntil(check: () => Promise<boolean>, timeoutMs: number, what: string, child: Child, everyMs = 100): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (child.exited()) throw new Error(`${child.name} exited while waiting for ${what}\n${child.tail()}`);
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`${what}: not within ${timeoutMs} ms\n${child.tail()}`);
}
