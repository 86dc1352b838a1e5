/**
 * Local mode's sandbox, tried as an attacker would: alice's agent, through its bash tool,
 * goes after bob's files, the sidecar's secrets and state, bob's opencode server and the
 * sidecar itself. Each attempt's tool output (what the model would see) must not carry the
 * secret. The sidecar runs as its own process (dist/main.js), with real secrets in its
 * environment, as in production.
 */
import { spawnSync } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { userHash } from "../../src/workspace/user-space.js";
import { say, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { opencodePids, scriptedEnv, SIDECAR_DIR, spawnSidecar, startSidecar, tempDir, type ChildSidecar } from "../helpers/harness.js";

let model: ScriptedModel;
let sidecar: ChildSidecar;
let env: Record<string, string>;
const GATEWAY_KEY = `gw-${randomBytes(12).toString("hex")}`;
const JWT_SECRET = `jwt-${randomBytes(12).toString("hex")}`;
const keys = { alice: `ka-${randomBytes(12).toString("hex")}`, bob: `kb-${randomBytes(12).toString("hex")}` };
const BOB_SECRET = `bob-only-${randomBytes(8).toString("hex")}`;

beforeAll(async () => {
  model = await startScriptedModel();
  const keysFile = path.join(tempDir("op-keys-"), "keys.json");
  fs.writeFileSync(keysFile, JSON.stringify({ [keys.alice]: "alice", [keys.bob]: "bob" }), { mode: 0o600 });
  env = scriptedEnv(model.baseURL, {
    SIDECAR_USER_KEYS_FILE: keysFile,
    SIDECAR_API_KEYS: GATEWAY_KEY,
    OPENWEBUI_JWT_SECRET: JWT_SECRET,
    // opencode alone: ~40 threads and ~0.7 GiB.
    RUNNER_PIDS: "200",
    RUNNER_MEMORY: "2g",
  });
  sidecar = await spawnSidecar(env);
  // bob chats first: his opencode runs, his files and session map exist.
  await chat("bob", say.write("diary.txt", BOB_SECRET));
});
afterAll(async () => {
  await sidecar?.stop();
  await model?.close();
});

async function chat(user: keyof typeof keys, content: string): Promise<string> {
  const res = await fetch(`${sidecar.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${keys[user]}`, "x-session-id": randomUUID() },
    body: JSON.stringify({ model: "open-persona/build", messages: [{ role: "user", content }] }),
  });
  expect(res.status).toBe(200);
  return (await res.json()).choices[0].message.content as string;
}

/** Runs `command` as alice's agent; returns the bash tool's output as the model received it. */
async function asAlice(command: string): Promise<string> {
  const marker = randomUUID();
  await chat("alice", `${marker} ${say.bash(command)}`);
  const followUp = model.requests.filter((r) => r.lastUserText.includes(marker)).at(-1)!;
  const tool = followUp.body.messages.filter((m) => m.role === "tool").at(-1);
  expect(tool, "the bash tool ran").toBeDefined();
  return typeof tool!.content === "string" ? tool!.content : JSON.stringify(tool!.content);
}

/** The user's opencode process (inside its sandbox), seen from the host. */
function opencodePidOf(user: string): number {
  const [pid] = opencodePids(sidecar.proc.pid!).filter((p) => fs.readFileSync(`/proc/${p}/environ`, "utf8").includes(`/users/${userHash(user)}/`));
  expect(pid, `${user}'s opencode runs`).toBeDefined();
  return pid!;
}

/** A cgroup v1 controller's directory for the process (the layout runners/cgroup-limits.ts uses here). */
function cgroupDir(pid: number, controller: "pids" | "memory"): string {
  const line = fs
    .readFileSync(`/proc/${pid}/cgroup`, "utf8")
    .split("\n")
    .find((l) => l.split(":")[1]?.split(",").includes(controller));
  return path.join("/sys/fs/cgroup", controller, line!.split(":")[2]!);
}

const bobWorkspace = () => path.join(env.WORKSPACE_ROOT!, userHash("bob"));

describe("local mode sandbox: alice's agent", () => {
  it("runs sandboxed (each user's opencode under bwrap)", () => {
    expect(sidecar.logs.some((l) => l.includes('"user opencode spawned"') && l.includes('"sandboxed":true'))).toBe(true);
    expect(fs.readFileSync(path.join(bobWorkspace(), "diary.txt"), "utf8")).toBe(BOB_SECRET);
  });

  // Paths spelled out are refused by opencode's static external_directory check before
  // anything runs; hidden in a variable or behind base64 they pass it: the sandbox must hold.
  const hidden = (p: string) => `"$(echo ${Buffer.from(p).toString("base64")} | base64 -d)"`;

  it("cannot read bob's workspace, by relative, hidden or encoded paths", async () => {
    const bob = userHash("bob");
    const out = await asAlice(
      [`X=..; cat "$X/${bob}/diary.txt"`, `cat ${hidden(`../${bob}/diary.txt`)}`, `cat ${hidden(`${bobWorkspace()}/diary.txt`)}`, `Y=..; ls "$Y"`, "echo done"].join("; ") + " 2>&1",
    );
    expect(out).toContain("done");
    expect(out).not.toContain(BOB_SECRET);
    expect(out.match(/No such file or directory/g)).toHaveLength(3);
    // The workspaces' parent holds only alice's own workspace.
    expect(out.split("\n").filter((l) => /^[0-9a-f]{16}$/.test(l.trim()))).toEqual([userHash("alice")]);
  });

  it("cannot read the sidecar's environment or any other process's", async () => {
    const out = await asAlice("for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done 2>&1; ls /proc | grep -c '^[0-9]'; echo done");
    expect(out).toContain("done");
    for (const secret of [GATEWAY_KEY, JWT_SECRET, keys.alice, keys.bob]) expect(out).not.toContain(secret);
    // Only the sandbox's own few processes are there (bwrap's init, opencode, the shell…).
    const count = Number(out.trim().split("\n").at(-2));
    expect(count).toBeLessThan(10);
  });

  it("cannot reach STATE_ROOT, the keys file or bob's session map", async () => {
    const out = await asAlice(
      [
        `ls -la ${hidden(env.STATE_ROOT!)}`,
        `cat ${hidden(`${env.STATE_ROOT}/users/${userHash("bob")}/sessions.json`)}`,
        `cat ${hidden(env.SIDECAR_USER_KEYS_FILE!)}`,
        `cat ${hidden(`${env.STATE_ROOT}/runner-secret`)}`,
        "echo done",
      ].join("; ") + " 2>&1",
    );
    expect(out).toContain("done");
    expect(out).not.toContain(keys.bob);
    expect(out).not.toContain("sessionId");
    expect(out).not.toContain("ses_");
  });

  it("cannot use bob's opencode server without its password, and cannot learn it", async () => {
    const port = /--port\0(\d+)/.exec(fs.readFileSync(`/proc/${opencodePidOf("bob")}/cmdline`, "utf8"))![1];
    const out = await asAlice(
      `exec 3<>/dev/tcp/127.0.0.1/${port} && printf 'GET /session HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n' >&3 && head -c 300 <&3; echo; echo done`,
    );
    expect(out).toContain("done");
    expect(out).toMatch(/401/);
    expect(out).not.toContain("ses_");
  });

  it("cannot call the sidecar as bob", async () => {
    const port = new URL(sidecar.url).port;
    const out = await asAlice(
      `exec 3<>/dev/tcp/127.0.0.1/${port} && printf 'GET /v1/sync/status HTTP/1.0\\r\\nHost: x\\r\\nX-OpenWebUI-User-Id: bob\\r\\n\\r\\n' >&3 && head -c 300 <&3; echo; echo done`,
    );
    expect(out).toContain("done");
    expect(out).toMatch(/401/);
  });
});

describe("local mode limits (RUNNER_PIDS=200, RUNNER_MEMORY=2g): alice's agent", () => {
  it("puts each user in their own cgroups, with the limits set", () => {
    expect(sidecar.logs.some((l) => l.includes('"per-user limits in local mode"'))).toBe(true);
    const alice = cgroupDir(opencodePidOf("alice"), "pids");
    expect(alice).not.toBe(cgroupDir(opencodePidOf("bob"), "pids"));
    expect(fs.readFileSync(path.join(alice, "pids.max"), "utf8").trim()).toBe("200");
    expect(Number(fs.readFileSync(path.join(cgroupDir(opencodePidOf("alice"), "memory"), "memory.limit_in_bytes"), "utf8"))).toBe(2 * 1024 ** 3);
  });

  it("runs a fork bomb into its process limit while bob's chat still answers", async () => {
    const pids = cgroupDir(opencodePidOf("alice"), "pids");
    const hitsBefore = Number(/max (\d+)/.exec(fs.readFileSync(path.join(pids, "pids.events"), "utf8"))![1]);
    // A real fork bomb, made to collapse after 12 s so that the suite can go on. The shell
    // around it waits and stops it with builtins only (reads on a fifo, a redirect): while
    // the bomb runs no fork succeeds.
    const bomb = asAlice(
      "mkfifo /tmp/f; exec 9<>/tmp/f; b(){ [ -e /tmp/stop ] && return; b | b & }; (b) 2>/dev/null; read -t 12 -u 9; : > /tmp/stop; read -t 5 -u 9; echo bomb-over",
    );
    await new Promise((r) => setTimeout(r, 4000));
    const started = Date.now();
    const bob = await chat("bob", say.text("bob still answers"));
    const bobMs = Date.now() - started;
    expect(bob).toContain("bob still answers");
    expect(await bomb).toContain("bomb-over");
    const hits = Number(/max (\d+)/.exec(fs.readFileSync(path.join(pids, "pids.events"), "utf8"))![1]);
    expect(hits, "forks refused at pids.max").toBeGreaterThan(hitsBefore);
    expect(bobMs).toBeLessThan(60_000);
  });

  it("has a memory hog killed inside its own limit; its opencode and bob go on", async () => {
    expect(await asAlice("echo warm")).toContain("warm");
    const memory = cgroupDir(opencodePidOf("alice"), "memory");
    const pidBefore = opencodePidOf("alice");
    // `tail` keeps a line in memory, and /dev/zero has no line ends.
    const out = await asAlice("head -c 6G /dev/zero | tail > /dev/null; echo hog-exit=$?");
    expect(out).toMatch(/hog-exit=137/);
    // Killed by the OOM killer of alice's own cgroup (with swap accounting, failcnt stays 0).
    expect(Number(/oom_kill (\d+)/.exec(fs.readFileSync(path.join(memory, "memory.oom_control"), "utf8"))![1])).toBeGreaterThan(0);
    expect(Number(fs.readFileSync(path.join(memory, "memory.max_usage_in_bytes"), "utf8"))).toBeLessThanOrEqual(2 * 1024 ** 3);
    expect(opencodePidOf("alice")).toBe(pidBefore);
    expect(await chat("bob", say.text("bob after the hog"))).toContain("bob after the hog");
  });
});

describe("where bubblewrap cannot run (LOCAL_SANDBOX_BWRAP names a missing binary)", () => {
  const noBwrap = (extra: Record<string, string> = {}) => scriptedEnv(model.baseURL, { LOCAL_SANDBOX_BWRAP: "/nonexistent/bwrap", ...extra });

  it("refuses to start with keys, saying why and what to do", () => {
    const r = spawnSync(process.execPath, [path.join(SIDECAR_DIR, "dist/main.js")], {
      env: { PATH: process.env.PATH ?? "", PORT: "0", ...noBwrap({ SIDECAR_API_KEYS: GATEWAY_KEY }) },
      encoding: "utf8",
      timeout: 30_000,
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("LOCAL_SANDBOX");
    expect(r.stderr).toContain("apt install bubblewrap");
    expect(r.stderr).toContain("LOCAL_SANDBOX=off");
    expect(r.stderr + r.stdout).not.toContain(GATEWAY_KEY);
  });

  it("runs users unsandboxed with keys only when LOCAL_SANDBOX=off says so, and warns", async () => {
    const sc = await startSidecar(noBwrap({ SIDECAR_API_KEYS: GATEWAY_KEY, LOCAL_SANDBOX: "off" }));
    try {
      expect(sc.logs.some((l) => l.includes("users are NOT isolated"))).toBe(true);
    } finally {
      await sc.close();
    }
  });

  it("serves a single loopback user without keys unsandboxed, with a warning", async () => {
    const sc = await startSidecar(noBwrap());
    try {
      expect(sc.logs.some((l) => l.includes("local mode runs without a sandbox"))).toBe(true);
      const res = await fetch(`${sc.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: "open-persona/build", messages: [{ role: "user", content: say.text("unsandboxed") }] }),
      });
      expect((await res.json()).choices[0].message.content).toContain("unsandboxed");
      expect(sc.logs.some((l) => l.includes('"user opencode spawned"') && l.includes('"sandboxed":false'))).toBe(true);
    } finally {
      await sc.close();
    }
  });

  it("refuses LOCAL_SANDBOX=on", async () => {
    await expect(startSidecar(noBwrap({ LOCAL_SANDBOX: "on" }))).rejects.toThrow(/LOCAL_SANDBOX: bubblewrap \(\/nonexistent\/bwrap\) cannot run: ENOENT/);
  });
});
