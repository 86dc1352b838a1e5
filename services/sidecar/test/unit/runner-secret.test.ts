/**
 * The runner secret under STATE_ROOT, created by whichever of several sidecar processes boots
 * first: real processes race on a real file system, released at one instant.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { persistentSecret } from "../../src/config/persistent-secret.js";
import { tempDir } from "../helpers/harness.js";

const REGISTRY = fileURLToPath(new URL("../../src/config/persistent-secret.ts", import.meta.url));
const PROCESSES = 8;
const ROUNDS = 30;
const ROUND_GAP_MS = 60;

/**
 * Each child loads the module, says "ready", reads the start time from stdin, then per round
 * spins until that round's instant and calls persistentSecret on a fresh file.
 */
const CHILD = `
import { createInterface } from "node:readline";
const { persistentSecret } = await import(${JSON.stringify(REGISTRY)});
const [dir, rounds, gap] = [process.env.DIR, Number(process.env.ROUNDS), Number(process.env.GAP)];
console.log("ready");
const startAt = Number(await new Promise((r) => createInterface({ input: process.stdin }).once("line", r)));
const out = [];
for (let i = 0; i < rounds; i++) {
  while (Date.now() < startAt + i * gap) {}
  try {
    out.push(persistentSecret(dir + "/" + i + "/runner-secret"));
  } catch (e) {
    out.push("threw " + (e.code ?? e.message));
  }
}
console.log(JSON.stringify(out));
process.exit(0);
`;

function child(dir: string) {
  const proc = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", CHILD], {
    env: { ...process.env, DIR: dir, ROUNDS: String(ROUNDS), GAP: String(ROUND_GAP_MS) },
    stdio: ["pipe", "pipe", "inherit"],
  });
  const lines: string[] = [];
  const waiting: Array<() => void> = [];
  createInterface({ input: proc.stdout! }).on("line", (l) => {
    lines.push(l);
    waiting.shift()?.();
  });
  const line = (n: number) => (lines.length > n ? Promise.resolve(lines[n]!) : new Promise<string>((r) => waiting.push(() => r(lines[n]!))));
  const exited = new Promise<number | null>((r) => proc.once("exit", r));
  return { proc, line, exited };
}

describe("persistentSecret", () => {
  it("gives processes booting together one non-empty secret, and none of them throws", async () => {
    const dir = tempDir("op-secret-");
    const children = Array.from({ length: PROCESSES }, () => child(dir));
    expect(await Promise.all(children.map((c) => c.line(0)))).toEqual(Array(PROCESSES).fill("ready"));
    const startAt = Date.now() + 300;
    for (const c of children) c.proc.stdin!.end(`${startAt}\n`);
    const results = (await Promise.all(children.map((c) => c.line(1)))).map((l) => JSON.parse(l) as string[]);
    expect(await Promise.all(children.map((c) => c.exited))).toEqual(Array(PROCESSES).fill(0));

    for (let round = 0; round < ROUNDS; round++) {
      const seen = results.map((r) => r[round]!);
      const onDisk = fs.readFileSync(path.join(dir, String(round), "runner-secret"), "utf8").trim();
      expect(onDisk).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(seen, `round ${round}`).toEqual(Array(PROCESSES).fill(onDisk));
      // Nothing is left behind but the secret itself.
      expect(fs.readdirSync(path.join(dir, String(round)))).toEqual(["runner-secret"]);
    }
  }, 60_000);

  it("keeps the secret private and stable across calls", () => {
    const file = path.join(tempDir("op-secret-"), "state", "runner-secret");
    const first = persistentSecret(file);
    expect(persistentSecret(file)).toBe(first);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
  });

  it("replaces an empty file (left by an interrupted write) instead of using an empty secret", () => {
    const file = path.join(tempDir("op-secret-"), "runner-secret");
    fs.writeFileSync(file, "", { mode: 0o600 });
    const secret = persistentSecret(file);
    expect(secret).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(fs.readFileSync(file, "utf8").trim()).toBe(secret);
  });
});
