import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import type { Logger } from "../../src/log/logger.js";
import { SessionStore } from "../../src/sessions/session-store.js";

const RACE_SCRIPT = fileURLToPath(new URL("./helpers/session-store-race.ts", import.meta.url));
const REPO = fileURLToPath(new URL("../../../..", import.meta.url));
const TSX = path.join(REPO, "node_modules/.bin/tsx");

const made: string[] = [];
afterAll(() => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});
function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "op-store-"));
  made.push(d);
  return d;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const readMapFile = (stateDir: string) => JSON.parse(fs.readFileSync(path.join(stateDir, "sessions.json"), "utf8")) as Record<string, { sessionId: string; createdAt: string }>;

describe("SessionStore in one process", () => {
  it("creates a session once however many requests race for it", async () => {
    const store = new SessionStore();
    const stateDir = path.join(tempDir(), "users", "abc");
    let calls = 0;
    const create = async () => {
      calls++;
      await sleep(30);
      return `ses_${calls}`;
    };
    const results = await Promise.all(Array.from({ length: 10 }, () => store.getOrCreate(stateDir, "chat-1", create)));
    await Promise.all(results.map((r) => r.saved));
    expect(calls).toBe(1);
    expect(new Set(results.map((r) => r.sessionId))).toEqual(new Set(["ses_1"]));
    expect(results.filter((r) => r.created)).toHaveLength(1);
    expect(Object.keys(readMapFile(stateDir))).toEqual(["chat-1"]);
    expect(await store.get(stateDir, "chat-1")).toBe("ses_1");
  });

  it("keeps chats apart and survives a new store instance (it is on disk)", async () => {
    const stateDir = tempDir();
    const a = await new SessionStore().getOrCreate(stateDir, "chat-a", async () => "ses_a");
    const b = await new SessionStore().getOrCreate(stateDir, "chat-b", async () => "ses_b");
    await Promise.all([a.saved, b.saved]);
    expect([a, b]).toMatchObject([
      { sessionId: "ses_a", created: true },
      { sessionId: "ses_b", created: true },
    ]);
    const again = await new SessionStore().getOrCreate(stateDir, "chat-a", async () => {
      throw new Error("must not create");
    });
    expect(again).toMatchObject({ sessionId: "ses_a", created: false });
    expect(await new SessionStore().get(stateDir, "missing")).toBeUndefined();
  });

  it("a failed create stores nothing and does not block the next caller", async () => {
    const store = new SessionStore();
    const stateDir = tempDir();
    await expect(store.getOrCreate(stateDir, "chat", async () => Promise.reject(new Error("runner down")))).rejects.toThrow("runner down");
    expect(await store.get(stateDir, "chat")).toBeUndefined();
    const ok = await store.getOrCreate(stateDir, "chat", async () => "ses_ok");
    await ok.saved;
    expect(ok).toMatchObject({ sessionId: "ses_ok", created: true });
    // No lock or temp file left behind (the per-chat lock directory stays, empty).
    expect(fs.readdirSync(stateDir).sort()).toEqual(["chat-locks", "sessions.json"]);
    expect(fs.readdirSync(`${stateDir}/chat-locks`)).toEqual([]);
  });

  it("replace swaps a stale id, and keeps one that someone already replaced", async () => {
    const store = new SessionStore();
    const stateDir = tempDir();
    await (await store.getOrCreate(stateDir, "chat", async () => "ses_old")).saved;

    let creates = 0;
    const fresh = await store.replace(stateDir, "chat", "ses_old", async () => {
      creates++;
      return "ses_new";
    });
    expect(fresh).toBe("ses_new");
    expect(await store.get(stateDir, "chat")).toBe("ses_new");

    // A second caller that also saw ses_old vanish: the chat already has a new session.
    const kept = await store.replace(stateDir, "chat", "ses_old", async () => {
      creates++;
      return "ses_newer";
    });
    expect(kept).toBe("ses_new");
    expect(creates).toBe(1);
    expect(await store.get(stateDir, "chat")).toBe("ses_new");
  });

  it("concurrent replaces of the same stale id create one session", async () => {
    const store = new SessionStore();
    const stateDir = tempDir();
    await (await store.getOrCreate(stateDir, "chat", async () => "ses_old")).saved;
    let n = 0;
    const ids = await Promise.all(
      Array.from({ length: 5 }, () =>
        store.replace(stateDir, "chat", "ses_old", async () => {
          await sleep(10);
          return `ses_new_${++n}`;
        }),
      ),
    );
    expect(n).toBe(1);
    expect(new Set(ids)).toEqual(new Set(["ses_new_1"]));
  });
});

describe("SessionStore with any chat key", () => {
  const keys = ["__proto__", "constructor", "toString", "hasOwnProperty", "valueOf", "__defineGetter__"];

  it("keeps chats named like object prototype members, also when read back from disk", async () => {
    const stateDir = tempDir();
    const store = new SessionStore();
    for (const k of keys) expect(await store.get(stateDir, k), k).toBeUndefined();
    for (const k of keys) {
      const r = await store.getOrCreate(stateDir, k, async () => `ses_${k}`);
      await r.saved;
      expect(r, k).toMatchObject({ sessionId: `ses_${k}`, created: true });
    }
    for (const k of keys) {
      expect(await store.get(stateDir, k), k).toBe(`ses_${k}`);
      expect(await new SessionStore().get(stateDir, k), `${k} read back`).toBe(`ses_${k}`);
      const again = await new SessionStore().getOrCreate(stateDir, k, async () => {
        throw new Error(`must not create ${k}`);
      });
      expect(again).toMatchObject({ sessionId: `ses_${k}`, created: false });
    }
    expect(Object.keys(readMapFile(stateDir)).sort()).toEqual([...keys].sort());
    expect(await store.replace(stateDir, "__proto__", "ses___proto__", async () => "ses_new")).toBe("ses_new");
    expect(await new SessionStore().get(stateDir, "__proto__")).toBe("ses_new");
  });

  it("ignores entries of a map file that are not session records", async () => {
    const stateDir = tempDir();
    fs.writeFileSync(path.join(stateDir, "sessions.json"), JSON.stringify({ good: { sessionId: "ses_1", createdAt: "x" }, bad: 42, worse: null }));
    const store = new SessionStore();
    expect(await store.get(stateDir, "good")).toBe("ses_1");
    expect(await store.get(stateDir, "bad")).toBeUndefined();
    expect(await store.getOrCreate(stateDir, "bad", async () => "ses_2")).toMatchObject({ sessionId: "ses_2", created: true });
    expect(await store.getOrCreate(stateDir, "worse", async () => "ses_3")).toMatchObject({ sessionId: "ses_3", created: true });
  });
});

describe("SessionStore lock loss", () => {
  it("logs a compromised lock instead of throwing from an fs callback, and finishes the work", async () => {
    const warnings: Array<{ obj: unknown; msg: string }> = [];
    const log = { warn: (obj: unknown, msg: string) => warnings.push({ obj, msg }) } as unknown as Logger;
    // Stale after 2 s: proper-lockfile checks the lock every second.
    const store = new SessionStore({ log, lockStaleMs: 2000 });
    const stateDir = tempDir();
    const r = await store.getOrCreate(stateDir, "chat", async () => {
      // The chat's lock vanishes while its session is being created (someone cleaned up).
      fs.rmSync(path.join(stateDir, "chat-locks"), { recursive: true, force: true });
      await sleep(2500);
      return "ses_1";
    });
    await r.saved;
    expect(r).toMatchObject({ sessionId: "ses_1", created: true });
    expect(warnings).toEqual([{ obj: expect.objectContaining({ err: expect.any(String) }), msg: expect.stringMatching(/lock compromised/) }]);
    expect(await store.get(stateDir, "chat")).toBe("ses_1");
    // The next caller gets a fresh lock as usual.
    expect((await store.getOrCreate(stateDir, "other", async () => "ses_2")).sessionId).toBe("ses_2");
  });
});

describe("SessionStore across processes", () => {
  it("four processes racing for one chat create one session", { timeout: 30_000 }, async () => {
    const stateDir = path.join(tempDir(), "users", "u1");
    const createLog = path.join(path.dirname(stateDir), "creates.log");
    fs.mkdirSync(path.dirname(stateDir), { recursive: true });

    const children = Array.from({ length: 4 }, () => {
      const proc = spawn(TSX, [RACE_SCRIPT, stateDir, "chat-race", createLog], { cwd: REPO, stdio: ["pipe", "pipe", "pipe"] });
      let stderr = "";
      proc.stderr!.on("data", (d) => (stderr += d));
      const lines = createInterface({ input: proc.stdout! });
      const ready = new Promise<void>((resolve) => lines.on("line", (l) => l === "ready" && resolve()));
      const result = new Promise<{ pid: number; sessionId: string; created: boolean }>((resolve, reject) => {
        lines.on("line", (l) => l.startsWith("{") && resolve(JSON.parse(l)));
        proc.on("exit", (code) => reject(new Error(`contender exited with ${code}: ${stderr}`)));
      });
      return { proc, ready, result };
    });
    try {
      await Promise.all(children.map((c) => c.ready));
      for (const c of children) c.proc.stdin!.write("go\n");
      const results = await Promise.all(children.map((c) => c.result));

      const created = fs.readFileSync(createLog, "utf8").trim().split("\n");
      expect(created).toHaveLength(1);
      expect(results.map((r) => r.sessionId)).toEqual(Array(4).fill(created[0]));
      expect(results.filter((r) => r.created)).toHaveLength(1);
      expect(new Set(results.map((r) => r.pid)).size).toBe(4);
      const map = readMapFile(stateDir);
      expect(Object.keys(map)).toEqual(["chat-race"]);
      expect(map["chat-race"]!.sessionId).toBe(created[0]);
    } finally {
      for (const c of children) if (c.proc.exitCode === null) c.proc.kill();
    }
  });
});
