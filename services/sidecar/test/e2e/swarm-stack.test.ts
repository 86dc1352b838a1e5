/**
 * The README's Docker Swarm deployment, for real: `docker stack deploy` of docker-stack.yml with
 * docker-stack.local.yml (the stand-in images, scripts/local-images.sh, no registry) on this
 * machine's swarm (scripts/swarm-setup.sh makes it a manager), settings from a file made from
 * docker-stack.env.example and exported the README's way, secrets as files. Real Open WebUI, two
 * sidecar replicas in swarm mode sharing the stand-in PostgreSQL, a runner *service* per user;
 * only the model is scripted, on this host, reached from the runners as host.docker.internal.
 *
 * What an operator and a user do: the stack comes up healthy, Open WebUI answers on its port and
 * each sidecar replica is ready; the first account is the admin; its first chat is answered by
 * its own runner service (placed by RUNNER_PLACEMENT); the same chat goes on through either
 * replica (the chat → session map is in PostgreSQL). The stack has its own name, ports, runner
 * network and placement label, and is removed at the end — stack, runner services, volumes,
 * network, label — failed or not.
 */
import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { randomBytes, randomUUID } from "node:crypto";
import { promisify } from "node:util";
import Docker from "dockerode";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../src/runners/free-port.js";
import { SwarmRunner } from "../../src/runners/swarm-runner.js";
import { userHash } from "../../src/workspace/user-space.js";
import { script, scriptedOpencodeConfig, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { SIDECAR_DIR, tempDir, waitFor, cleanupStep } from "../helpers/harness.js";
import { httpCall } from "../helpers/http-call.js";
import { sendMessage, waitForReply, type OpenWebUIApi, type SentMessage, type SignedIn } from "../helpers/openwebui-chat.js";
import { ensureSwarm } from "../helpers/swarm.js";

const run = promisify(execFile);
const REPO = path.resolve(SIDECAR_DIR, "../..");
const docker = new Docker({ socketPath: "/var/run/docker.sock" });
const RUN = randomUUID().slice(0, 8);
const STACK = `op-stack-${RUN}`;
const RUNNER_NETWORK = `${STACK}-runners`;
/** A node label of this run's own: RUNNER_PLACEMENT must send the runners to a node carrying it. */
const PLACEMENT_LABEL = `op-stack-${RUN}`;
const STACK_LABEL = `com.docker.stack.namespace=${STACK}`;

let model: ScriptedModel;
let root: string;
let settingsFile: string;
let secretsDir: string;
let owui: OpenWebUIApi;
let nodeId: string | undefined;
const hashes: string[] = [];

interface User extends SignedIn {
  id: string;
}
let admin: User;
let adminChat: SentMessage;

/** A shell word: the settings file is sourced by sh, as the README does it. */
const quote = (v: string) => `'${v.replace(/'/g, `'\\''`)}'`;

/** docker-stack.env.example with KEY set: its `KEY=` line, else its commented-out `# KEY=` line; a key it lacks fails the test. */
function setSetting(text: string, key: string, value: string): string {
  const line = [new RegExp(`^${key}=.*$`, "m"), new RegExp(`^#\\s*${key}=.*$`, "m")].find((re) => re.test(text));
  if (!line) throw new Error(`docker-stack.env.example has no ${key}`);
  return text.replace(line, () => `${key}=${quote(value)}`);
}

/** A shell command as the operator runs it in the repository: the settings exported, nothing else from this process's environment. */
async function operator(command: string, timeoutMs = 120_000): Promise<string> {
  try {
    const { stdout, stderr } = await run("bash", ["-c", `set -euo pipefail; set -a; . ${quote(settingsFile)}; set +a; ${command}`], {
      cwd: REPO,
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root" },
      timeout: timeoutMs,
      maxBuffer: 16 * 1024 * 1024,
    });
    return stdout + stderr;
  } catch (e) {
    const err = e as Error & { stdout?: string; stderr?: string };
    throw new Error(`${command} failed: ${err.message}\n${err.stdout ?? ""}\n${err.stderr ?? ""}`);
  }
}

const deploy = () => operator(`docker stack deploy --resolve-image never -c docker-stack.yml -c docker-stack.local.yml ${STACK}`);

/** The stack's running containers, by service (sidecar, postgres, openwebui). */
async function stackContainers(): Promise<Map<string, Docker.ContainerInfo[]>> {
  const byService = new Map<string, Docker.ContainerInfo[]>();
  for (const c of await docker.listContainers({ filters: { label: [STACK_LABEL] } })) {
    const service = (c.Labels["com.docker.swarm.service.name"] ?? "").slice(STACK.length + 1);
    byService.set(service, [...(byService.get(service) ?? []), c]);
  }
  return byService;
}

/** Every service's tasks run and pass their healthcheck: one Open WebUI, one PostgreSQL, two sidecars. */
async function waitHealthy(timeoutMs: number): Promise<void> {
  let states = "";
  await waitFor(
    async () => {
      const want: Record<string, number> = { openwebui: 1, postgres: 1, sidecar: 2 };
      const seen: string[] = [];
      let ok = true;
      const containers = await stackContainers();
      for (const [service, n] of Object.entries(want)) {
        const health = await Promise.all((containers.get(service) ?? []).map(async (c) => (await docker.getContainer(c.Id).inspect()).State.Health?.Status));
        seen.push(`${service}: ${health.join("/") || "none"}`);
        if (health.filter((h) => h === "healthy").length !== n) ok = false;
      }
      states = seen.join(", ");
      return ok;
    },
    timeoutMs,
    "the stack to be healthy",
  ).catch((e: Error) => {
    throw new Error(`${e.message} (${states})`);
  });
}

/** Adds or removes this run's label on the node; again when another test updated the node meanwhile ("update out of sequence"). */
async function nodeLabel(flag: "--label-add" | "--label-rm", label: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await run("docker", ["node", "update", flag, label, nodeId!]);
      return;
    } catch (e) {
      if (attempt >= 5 || !/out of sequence/i.test(String((e as { stderr?: string }).stderr))) throw e;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

/** Runs a Node script inside a container of the stack (the sidecar image has node and nothing else to talk with). */
async function nodeIn(containerId: string, code: string, ...args: string[]): Promise<string> {
  const { stdout } = await run("docker", ["exec", containerId, "node", "-e", code, ...args], { timeout: 150_000, maxBuffer: 4 * 1024 * 1024 });
  return stdout.trim();
}

/**
 * One chat turn sent straight to one sidecar replica, as Open WebUI's gateway sends it: the
 * gateway key, the user in a signed X-OpenWebUI-User-Jwt, the chat id. The answer's text.
 */
async function turnOnReplica(containerId: string, who: User, chatId: string, content: string): Promise<string> {
  const secret = (name: string) => fs.readFileSync(path.join(secretsDir, name), "utf8").trim();
  const jwt = await new SignJWT({})
    .setProtectedHeader({ alg: "HS256" })
    .setIssuer("open-webui")
    .setSubject(who.id)
    .setIssuedAt()
    .setExpirationTime("5m")
    .sign(new TextEncoder().encode(secret("openwebui_jwt_secret")));
  const code = `const [key, jwt, chat, content] = process.argv.slice(1);
fetch("http://127.0.0.1:8000/v1/chat/completions", {
  method: "POST",
  headers: { authorization: "Bearer " + key, "content-type": "application/json", "x-openwebui-user-jwt": jwt, "x-openwebui-chat-id": chat },
  body: JSON.stringify({ model: "open-persona/build", stream: false, messages: [{ role: "user", content }] }),
}).then(async (r) => console.log(JSON.stringify({ status: r.status, body: await r.json() })), (e) => { console.error(e); process.exit(1); });`;
  const out = JSON.parse(await nodeIn(containerId, code, secret("sidecar_api_key"), jwt, chatId, content)) as { status: number; body: { choices?: Array<{ message: { content: string } }> } };
  expect(out.status, JSON.stringify(out.body)).toBe(200);
  return out.body.choices![0]!.message.content;
}

/** The user's runner services in this stack (there must be one at most). */
const runnerServices = (hash: string) => docker.listServices({ filters: { label: [`open-persona.user=${hash}`, `open-persona.network=${RUNNER_NETWORK}`] } });

/** Reads a file from the user's workspace volume, in a throwaway container (the volume is on this node). */
async function workspaceFile(hash: string, file: string): Promise<string> {
  const c = await docker.createContainer({
    Image: "open-persona-runner:latest",
    Entrypoint: ["/bin/cat", `/w/${file}`],
    Labels: { "open-persona.test": RUN },
    HostConfig: { Mounts: [{ Type: "volume", Source: SwarmRunner.workspaceVolume(hash), Target: "/w", ReadOnly: true }] },
  });
  try {
    await c.start();
    await c.wait();
    return ((await c.logs({ stdout: true, stderr: true })) as unknown as Buffer).toString("utf8").replace(/[\x00-\x08]/g, "").trim();
  } finally {
    await c.remove({ force: true });
  }
}

beforeAll(async () => {
  await ensureSwarm();
  // Cached by their inputs: seconds when pretest (scripts/test-setup.sh) built them already.
  const t0 = Date.now();
  const built = await run("bash", [path.join(REPO, "scripts/local-images.sh")], { cwd: REPO, timeout: 600_000, maxBuffer: 16 * 1024 * 1024 });
  console.log(`stand-in images ready in ${((Date.now() - t0) / 1000).toFixed(1)} s:\n${built.stdout.trim()}`);

  model = await startScriptedModel(0, "0.0.0.0");
  root = tempDir("op-stack-");
  const owuiPort = await freePort();
  const sidecarPort = await freePort();
  owui = { api: (auth, method, urlPath, body) => httpCall(`http://127.0.0.1:${owuiPort}`, auth, method, urlPath, body) };

  // The secrets, as the README makes them.
  secretsDir = path.join(root, "secrets");
  fs.mkdirSync(secretsDir, { mode: 0o700 });
  const secret = () => randomBytes(24).toString("hex");
  const pgPassword = secret();
  for (const [name, value] of Object.entries({
    sidecar_api_key: secret(),
    openwebui_jwt_secret: secret(),
    runner_secret: secret(),
    webui_secret_key: secret(),
    postgres_password: pgPassword,
    database_url: `postgres://open_persona:${pgPassword}@postgres:5432/open_persona`,
  })) {
    fs.writeFileSync(path.join(secretsDir, name), `${value}\n`, { mode: 0o600 });
  }

  // RUNNER_PLACEMENT names a label only this node carries, for this run.
  nodeId = ((await docker.info()) as { Swarm: { NodeID: string } }).Swarm.NodeID;
  await nodeLabel("--label-add", `${PLACEMENT_LABEL}=true`);

  let settings = fs.readFileSync(path.join(REPO, "docker-stack.env.example"), "utf8");
  for (const [key, value] of Object.entries({
    OPEN_PERSONA_SECRETS: secretsDir,
    OPENCODE_CONFIG_CONTENT: JSON.stringify(scriptedOpencodeConfig(`http://host.docker.internal:${model.port}/v1`)),
    OPENCODE_DISABLE_MODELS_FETCH: "1",
    OPENWEBUI_PORT: String(owuiPort),
    SIDECAR_PORT: String(sidecarPort),
    PUBLIC_BASE_URL: `http://127.0.0.1:${sidecarPort}`,
    RUNNER_PLACEMENT: `node.labels.${PLACEMENT_LABEL}==true`,
    RUNNER_NETWORK,
  })) {
    settings = setSetting(settings, key, value);
  }
  settingsFile = path.join(root, "stack.env");
  fs.writeFileSync(settingsFile, settings, { mode: 0o600 });
}, 660_000);

afterAll(async () => {
  const step = cleanupStep;
  // The runner services are the sidecars', not the stack's; they go first, so that
  // `docker stack rm` can remove their network.
  await step("runner services", async () => {
    for (const s of await docker.listServices({ filters: { label: [`open-persona.network=${RUNNER_NETWORK}`] } })) {
      const hash = s.Spec?.Labels?.["open-persona.user"];
      if (hash && !hashes.includes(hash)) hashes.push(hash);
      await docker.getService(s.ID).remove();
    }
  });
  if (settingsFile) await step("docker stack rm", () => operator(`docker stack rm ${STACK}`));
  // Volumes are freed once the tasks' containers are gone (runners: 10 s grace; postgres: 1 min).
  await step("containers", () =>
    waitFor(
      async () => {
        const left = [
          ...(await docker.listContainers({ all: true, filters: { label: [STACK_LABEL] } })),
          ...(await docker.listContainers({ all: true, filters: { label: [`open-persona.network=${RUNNER_NETWORK}`] } })),
        ];
        return left.length === 0;
      },
      90_000,
      "the stack's and the runners' containers to go",
    ),
  );
  await step("volumes", async () => {
    const stackVolumes = (await docker.listVolumes({ filters: { label: [STACK_LABEL] } })).Volumes ?? [];
    const names = [...stackVolumes.map((v) => v.Name), ...hashes.flatMap((h) => [SwarmRunner.workspaceVolume(h), SwarmRunner.dataVolume(h)])];
    for (const name of names) {
      await docker
        .getVolume(name)
        .remove()
        .catch((e: Error & { statusCode?: number }) => {
          if (e.statusCode !== 404) throw e;
        });
    }
  });
  await step("networks", async () => {
    for (const n of await docker.listNetworks()) if (n.Name.startsWith(STACK)) await docker.getNetwork(n.Id).remove();
  });
  if (nodeId) await step("node label", () => nodeLabel("--label-rm", PLACEMENT_LABEL));
  await step("model", async () => model?.close());
  if (root) fs.rmSync(root, { recursive: true, force: true });
}, 240_000);

describe("docker stack deploy: the swarm stack, used as an operator and a user would", () => {
  it("comes up healthy: Open WebUI answers on its port, both sidecar replicas are ready", async () => {
    const t0 = Date.now();
    await deploy();
    await waitHealthy(420_000);
    console.log(`deploy → healthy ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    const health = await owui.api(null, "GET", "/health");
    expect(health.status).toBe(200);
    const sidecars = (await stackContainers()).get("sidecar")!;
    expect(sidecars).toHaveLength(2);
    for (const c of sidecars) {
      const ready = JSON.parse(await nodeIn(c.Id, `fetch("http://127.0.0.1:8000/readyz").then(async (r) => console.log(JSON.stringify({ status: r.status, body: await r.json() })))`));
      expect(ready.status, JSON.stringify(ready.body)).toBe(200);
      expect(ready.body.runner).toBe("swarm");
    }
  }, 480_000);

  it("makes the first account admin and answers its first chat from its own runner service", async () => {
    const password = `pw-${randomUUID()}`;
    const signup = await owui.api(null, "POST", "/api/v1/auths/signup", { name: "Admin", email: "admin@example.com", password });
    expect(signup.status, JSON.stringify(signup.body)).toBe(200);
    expect(signup.body.role).toBe("admin");
    admin = { id: signup.body.id, token: signup.body.token, name: signup.body.name, email: "admin@example.com" };
    const hash = userHash(admin.id);
    hashes.push(hash);

    // The agent writes who ran it: the task container's hostname (its short id) and uid.
    const t0 = Date.now();
    adminChat = await sendMessage(owui, admin, script({ tool: "bash", args: { command: "hostname > made-by.txt && id -u >> made-by.txt", description: "sign" } }, { text: "signed" }));
    // A cold runner: a service created, scheduled, its volumes made, opencode booting, on a loaded 2-core machine.
    const reply = await waitForReply(owui, admin, adminChat, 180_000);
    console.log(`first answer (cold runner service) ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    expect(reply.error ?? null).toBeNull();
    expect(reply.content.trim().endsWith("signed")).toBe(true);

    const services = await runnerServices(hash);
    expect(services).toHaveLength(1);
    const service = await docker.getService(services[0]!.ID).inspect();
    expect(service.Spec.Name).toBe(SwarmRunner.serviceName(hash));
    expect(service.Spec.Mode.Replicated.Replicas).toBe(1);
    // The settings reached the runner service: placement, image, limits.
    expect(service.Spec.TaskTemplate.Placement.Constraints).toContain(`node.labels.${PLACEMENT_LABEL}==true`);
    expect(service.Spec.TaskTemplate.ContainerSpec.Image).toBe("open-persona-runner:latest");
    expect(service.Spec.TaskTemplate.Resources.Limits.MemoryBytes).toBe(2 * 1024 ** 3);
    const tasks = (await docker.listTasks({ filters: { service: [service.ID], "desired-state": ["running"] } })) as Array<{ Status: { State: string; ContainerStatus?: { ContainerID?: string } } }>;
    const running = tasks.filter((t) => t.Status.State === "running");
    expect(running).toHaveLength(1);
    const [hostname, uid] = (await workspaceFile(hash, "made-by.txt")).split("\n");
    expect(running[0]!.Status.ContainerStatus?.ContainerID?.startsWith(hostname!)).toBe(true);
    expect(uid).toBe("1000");
  }, 300_000);

  it("goes on with the same chat through either sidecar replica: the session map is shared in PostgreSQL", async () => {
    const sidecars = (await stackContainers()).get("sidecar")!;
    expect(sidecars).toHaveLength(2);
    // countTurns: the agent sees every user message of its session so far.
    expect(await turnOnReplica(sidecars[0]!.Id, admin, adminChat.chatId, script({ countTurns: true }))).toBe("turns=2");
    expect(await turnOnReplica(sidecars[1]!.Id, admin, adminChat.chatId, script({ countTurns: true }))).toBe("turns=3");
    // Still the one runner service.
    expect(await runnerServices(userHash(admin.id))).toHaveLength(1);

    // Memory at rest, as `docker stats` shows it (after the turns settle).
    await new Promise((r) => setTimeout(r, 5000));
    const ids = [...(await stackContainers()).values()].flat().map((c) => c.Id);
    const runners = await docker.listContainers({ filters: { label: [`open-persona.network=${RUNNER_NETWORK}`] } });
    const stats = await run("docker", ["stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}", ...ids, ...runners.map((c) => c.Id)]);
    console.log(`memory at rest:\n${stats.stdout.trim()}`);
  }, 300_000);
});
