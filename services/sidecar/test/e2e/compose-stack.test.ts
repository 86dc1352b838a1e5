/**
 * The README's deployment, for real: docker-compose.yml with a `.env` made from .env.example,
 * started with `docker-compose up --build` on a Docker engine without a registry — the stand-in
 * images built from local files (scripts/local-images.sh), selected the way the README says
 * (COMPOSE_FILE with docker-compose.local.yml in .env). Real Open WebUI, the sidecar in docker
 * mode, a real opencode container per user; only the model is scripted, on this host, reached
 * from the containers as host.docker.internal (OPENCODE_CONFIG_CONTENT in .env).
 *
 * Then what an operator and users do, through Open WebUI's published port only. The stack has
 * its own project name, ports, runner networks and workspace root, and is removed at the end
 * (containers, networks, volumes — the runners' too), failed or not.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { randomBytes, randomUUID } from "node:crypto";
import { promisify } from "node:util";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LABEL_MANAGED, LABEL_USER, DockerRunner } from "../../src/runners/docker-runner.js";
import { freePort } from "../../src/runners/free-port.js";
import { userHash } from "../../src/workspace/user-space.js";
import { script, scriptedOpencodeConfig, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { SIDECAR_DIR, tempDir, waitFor, cleanupStep } from "../helpers/harness.js";
import { httpCall } from "../helpers/http-call.js";
import { sendMessage, waitForReply, type OpenWebUIApi, type SentMessage, type SignedIn } from "../helpers/openwebui-chat.js";

const run = promisify(execFile);
const REPO = path.resolve(SIDECAR_DIR, "../..");
const docker = new Docker({ socketPath: "/var/run/docker.sock" });
const RUN = randomUUID().slice(0, 8);
const PROJECT = `op-compose-${RUN}`;
const RUNNER_NETWORK = `${PROJECT}-runners`;
/** Apart from the default pool and the other docker suites' (10.213/16, 10.214.0/24). */
const POOL = "10.215.0.0/24";

let model: ScriptedModel;
let root: string;
let envFile: string;
let owui: OpenWebUIApi;
let workspaces: string;

interface User extends SignedIn {
  id: string;
  password: string;
}
let admin: User;
let bob: User;
let adminChat: SentMessage;
let bobChat: SentMessage;

/** docker-compose as an operator runs it in the repository, with the test's .env (and nothing from this shell). */
async function compose(args: string[], timeoutMs = 180_000): Promise<string> {
  try {
    const { stdout, stderr } = await run("docker-compose", ["--env-file", envFile, ...args], {
      cwd: REPO,
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root" },
      timeout: timeoutMs,
      maxBuffer: 16 * 1024 * 1024,
    });
    return stdout + stderr;
  } catch (e) {
    const err = e as Error & { stdout?: string; stderr?: string };
    throw new Error(`docker-compose ${args.join(" ")} failed: ${err.message}\n${err.stdout ?? ""}\n${err.stderr ?? ""}`);
  }
}

/** .env.example with KEY set: its `KEY=` line, else its commented-out `# KEY=` line; a key it lacks fails the test. */
function setEnv(text: string, key: string, value: string): string {
  const line = [new RegExp(`^${key}=.*$`, "m"), new RegExp(`^#\\s*${key}=.*$`, "m")].find((re) => re.test(text));
  if (!line) throw new Error(`.env.example has no ${key}`);
  return text.replace(line, () => `${key}=${value}`);
}

const stackContainers = () => docker.listContainers({ all: true, filters: { label: [`com.docker.compose.project=${PROJECT}`] } });
/** The runner containers this stack's sidecar made (they live outside the compose project). */
async function runners(): Promise<Docker.ContainerInfo[]> {
  const all = await docker.listContainers({ all: true, filters: { label: [`${LABEL_MANAGED}=true`] } });
  return all.filter((c) => c.Names.some((n) => n.startsWith("/open-persona-runner-")) && Object.keys(c.NetworkSettings?.Networks ?? {}).some((n) => n.startsWith(RUNNER_NETWORK)));
}
const runnerOf = async (u: User) => (await runners()).filter((c) => c.Labels[LABEL_USER] === userHash(u.id));
const workspaceOf = (u: User) => path.join(workspaces, userHash(u.id));

/** Both services report healthy (their compose healthchecks), and the one-shot runner-image job succeeded. */
async function waitHealthy(timeoutMs: number): Promise<void> {
  let states = "";
  await waitFor(
    async () => {
      const cs = await stackContainers();
      const health = await Promise.all(cs.map(async (c) => [c.Labels["com.docker.compose.service"], (await docker.getContainer(c.Id).inspect()).State] as const));
      states = health.map(([s, st]) => `${s}: ${st.Status} ${st.Health?.Status ?? ""} ${st.ExitCode}`).join(", ");
      const of = (s: string) => health.find(([name]) => name === s)?.[1];
      return of("openwebui")?.Health?.Status === "healthy" && of("sidecar")?.Health?.Status === "healthy" && of("runner-image")?.ExitCode === 0;
    },
    timeoutMs,
    "the stack to be healthy",
  ).catch((e: Error) => {
    throw new Error(`${e.message} (${states})`);
  });
}

async function signIn(email: string, password: string): Promise<User> {
  const res = await owui.api(null, "POST", "/api/v1/auths/signin", { email, password });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return { id: res.body.id, token: res.body.token, name: res.body.name, email, password };
}

async function chat(who: User, content: string, after?: SentMessage) {
  const sent = await sendMessage(owui, who, content, after ? { after } : {});
  // A cold runner (container start, opencode boot) on a loaded 2-core machine.
  return { sent, reply: await waitForReply(owui, who, sent, 120_000) };
}

beforeAll(async () => {
  await docker.ping();
  // Cached by their inputs: seconds when pretest (scripts/test-setup.sh) built them already.
  const t0 = Date.now();
  const built = await run("bash", [path.join(REPO, "scripts/local-images.sh")], { cwd: REPO, timeout: 600_000, maxBuffer: 16 * 1024 * 1024 });
  console.log(`stand-in images ready in ${((Date.now() - t0) / 1000).toFixed(1)} s:\n${built.stdout.trim()}`);

  model = await startScriptedModel(0, "0.0.0.0");
  root = tempDir("op-compose-");
  workspaces = path.join(root, "workspaces");
  const [owuiPort, sidecarPort] = [await freePort(), await freePort()];
  owui = { api: (auth, method, urlPath, body) => httpCall(`http://127.0.0.1:${owuiPort}`, auth, method, urlPath, body) };
  const secret = () => randomBytes(24).toString("hex");
  let env = fs.readFileSync(path.join(REPO, ".env.example"), "utf8");
  for (const [key, value] of Object.entries({
    COMPOSE_PROJECT_NAME: PROJECT,
    COMPOSE_FILE: "docker-compose.yml:docker-compose.local.yml",
    WEBUI_SECRET_KEY: secret(),
    SIDECAR_API_KEY: secret(),
    OPENWEBUI_JWT_SECRET: secret(),
    RUNNER_SECRET: secret(),
    OPENCODE_CONFIG_CONTENT: JSON.stringify(scriptedOpencodeConfig(`http://host.docker.internal:${model.port}/v1`)),
    // Loopback only: test secrets on a shared machine.
    OPENWEBUI_PORT: `127.0.0.1:${owuiPort}`,
    SIDECAR_PORT: `127.0.0.1:${sidecarPort}`,
    PUBLIC_BASE_URL: `http://127.0.0.1:${sidecarPort}`,
    OPEN_PERSONA_WORKSPACES: workspaces,
    RUNNER_NETWORK,
    RUNNER_SUBNET_POOL: POOL,
  })) {
    env = setEnv(env, key, value);
  }
  envFile = path.join(root, ".env");
  fs.writeFileSync(envFile, env);
}, 660_000);

afterAll(async () => {
  const step = cleanupStep;
  if (envFile) await step("docker-compose down", () => compose(["down", "--volumes", "--remove-orphans", "--timeout", "10"]));
  await step("runners", async () => {
    for (const c of await runners()) {
      await docker.getContainer(c.Id).remove({ force: true });
      const hash = c.Labels[LABEL_USER];
      if (hash) await docker.getVolume(DockerRunner.volumeName(hash)).remove();
    }
  });
  await step("runner networks", async () => {
    for (const n of await docker.listNetworks()) if (n.Name.startsWith(RUNNER_NETWORK)) await docker.getNetwork(n.Id).remove();
  });
  await step("model", async () => model?.close());
  if (root) fs.rmSync(root, { recursive: true, force: true });
}, 120_000);

describe("docker-compose up: the whole stack, used as an operator and users would", () => {
  it("comes up healthy, makes the first account admin and answers its first chat from its own runner container", async () => {
    const t0 = Date.now();
    await compose(["up", "-d", "--build"], 300_000);
    await waitHealthy(300_000);
    const healthyMs = Date.now() - t0;

    // The operator: the first account to sign up is Open WebUI's admin.
    const password = `pw-${randomUUID()}`;
    const signup = await owui.api(null, "POST", "/api/v1/auths/signup", { name: "Admin", email: "admin@example.com", password });
    expect(signup.status, JSON.stringify(signup.body)).toBe(200);
    expect(signup.body.role).toBe("admin");
    admin = await signIn("admin@example.com", password);

    // The agent writes who ran it: the runner container's hostname (its short id) and uid.
    const { sent, reply } = await chat(admin, script({ tool: "bash", args: { command: "hostname > made-by.txt && id -u >> made-by.txt", description: "sign" } }, { text: "signed" }));
    const firstAnswerMs = Date.now() - t0;
    adminChat = sent;
    expect(reply.error ?? null).toBeNull();
    expect(reply.content.trim().endsWith("signed")).toBe(true);

    const containers = await runnerOf(admin);
    expect(containers).toHaveLength(1);
    expect(containers[0]!.Names[0]).toBe(`/${DockerRunner.containerName(userHash(admin.id))}`);
    const file = path.join(workspaceOf(admin), "made-by.txt");
    const [hostname, uid] = fs.readFileSync(file, "utf8").trim().split("\n");
    expect(containers[0]!.Id.startsWith(hostname!)).toBe(true);
    expect(uid).toBe("1000");
    expect(fs.statSync(file).uid).toBe(1000);
    console.log(`up → healthy ${(healthyMs / 1000).toFixed(1)} s, up → first answer ${(firstAnswerMs / 1000).toFixed(1)} s`);
  }, 600_000);

  it("gives a second user, added by the admin, a second runner container and workspace", async () => {
    const password = `pw-${randomUUID()}`;
    const added = await owui.api(admin.token, "POST", "/api/v1/auths/add", { name: "Bob Example", email: "bob@example.com", password, role: "user" });
    expect(added.status, JSON.stringify(added.body)).toBe(200);
    bob = await signIn("bob@example.com", password);

    const { sent, reply } = await chat(bob, script({ tool: "write", args: { filePath: "notes.md", content: "bob's notes" } }, { text: "noted" }));
    bobChat = sent;
    expect(reply.error ?? null).toBeNull();
    expect(fs.readFileSync(path.join(workspaceOf(bob), "notes.md"), "utf8")).toBe("bob's notes");
    expect(fs.existsSync(path.join(workspaceOf(bob), "made-by.txt"))).toBe(false);
    const [a, b] = [await runnerOf(admin), await runnerOf(bob)];
    expect(b).toHaveLength(1);
    expect(b[0]!.Id).not.toBe(a[0]!.Id);
    // The .env's RUNNER_MEMORY (2g) reached the runners through the compose file.
    expect((await docker.getContainer(b[0]!.Id).inspect()).HostConfig.Memory).toBe(2 * 1024 ** 3);

    // Memory at rest, as `docker stats` shows it (after the turns settle).
    await new Promise((r) => setTimeout(r, 5000));
    const names = [...(await stackContainers()).filter((c) => c.State === "running"), ...(await runners())].map((c) => c.Names[0]!.slice(1));
    const stats = await run("docker", ["stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}", ...names]);
    console.log(`memory at rest:\n${stats.stdout.trim()}`);
  }, 300_000);

  it("keeps the chats' sessions, the accounts and the files across docker-compose down and up", async () => {
    const t0 = Date.now();
    await compose(["down", "--timeout", "30"]);
    console.log(`down in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    expect(await stackContainers()).toHaveLength(0);
    // As after a reboot, bob's runner is stopped too: it must come back from its data volume.
    // The admin's keeps running and is adopted by the new sidecar.
    await docker.getContainer((await runnerOf(bob))[0]!.Id).stop({ t: 10 });

    await compose(["up", "-d", "--build"], 300_000);
    await waitHealthy(300_000);
    // Accounts and chats are in Open WebUI's volume; sessions in the sidecar's and the runners'.
    const before = [admin.id, bob.id];
    admin = await signIn(admin.email, admin.password);
    bob = await signIn(bob.email, bob.password);
    expect([admin.id, bob.id]).toEqual(before);
    const listed = await owui.api(admin.token, "GET", "/api/v1/chats/");
    expect(listed.status).toBe(200);
    expect((listed.body as unknown as Array<{ id: string }>).map((c) => c.id)).toContain(adminChat.chatId);

    // countTurns: the agent sees two user messages in its session, so it is the same session.
    const again = await chat(admin, script({ countTurns: true }), adminChat);
    expect(again.reply.content).toBe("turns=2");
    const bobAgain = await chat(bob, script({ countTurns: true }), bobChat);
    expect(bobAgain.reply.content).toBe("turns=2");
    expect(fs.readFileSync(path.join(workspaceOf(admin), "made-by.txt"), "utf8")).toContain("1000");
    expect(fs.readFileSync(path.join(workspaceOf(bob), "notes.md"), "utf8")).toBe("bob's notes");
    expect(await runners()).toHaveLength(2);
  }, 600_000);
});
