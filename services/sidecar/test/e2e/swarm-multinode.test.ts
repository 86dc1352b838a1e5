/**
 * RUNNER_MODE=swarm across two nodes on one machine: this engine is the swarm's manager
 * (scripts/swarm-setup.sh) and a second Docker engine, in a container, is a worker
 * (scripts/swarm-workers.sh; helpers/swarm.ts). First the test swarm itself is shown to be a
 * real one: a pinned service runs on the worker, its node-local volume outlives its task, and
 * the overlay network carries HTTP from the manager to it. Then the sidecar runs as a container
 * from open-persona-sidecar:latest on the manager, with the Docker socket and
 * RUNNER_PLACEMENT=node.hostname==<worker>: its users' runners are services on the worker, whose
 * files, sessions and isolation are checked there. The model is scripted, on this host,
 * reached from every node's tasks as host.docker.internal (the worker engine maps host-gateway
 * to this machine: services/swarm-node/entrypoint.sh).
 *
 * Everything made here — services, volumes on both nodes, the overlay networks, the sidecar
 * container — is removed at the end; the worker too, unless it was up before this file ran.
 */
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import path from "node:path";
import { promisify } from "node:util";
import type Docker from "dockerode";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../src/runners/free-port.js";
import { SwarmRunner } from "../../src/runners/swarm-runner.js";
import { userHash } from "../../src/workspace/user-space.js";
import { say, scriptedOpencodeConfig, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { gatewayChat } from "../helpers/gateway-chat.js";
import { SIDECAR_DIR, waitFor, cleanupStep } from "../helpers/harness.js";
import { cleanSwarm, execOnNode, LABEL_MANAGED, manager, node, runningTask, runOnNode, tasksOf, volumeOn, workersDown, workersUp } from "../helpers/swarm.js";

const run = promisify(execFile);
const REPO = path.resolve(SIDECAR_DIR, "../..");
const RUN = randomUUID().slice(0, 8);
const PREFIX = `op-swarm-mn-${RUN}`;
const NETWORK = `${PREFIX}-runners`;
const SIDECAR = `${PREFIX}-sidecar`;
const GATEWAY_KEY = `gw-${RUN}-sidecar-only`;
const RUNNER_SECRET = `runner-secret-${RUN}-sidecar-only`;
const RUNNER_IMAGE = "open-persona-runner:latest";

let model: ScriptedModel;
let worker: string;
let managerHost: string;
/** Whether this file brought the worker up (and so takes it down). */
let ownWorkers = false;
const users: string[] = [];
const user = (name: string) => {
  const id = `${name}-${RUN}@example.com`;
  users.push(id);
  return id;
};
const serviceOf = (userId: string) => SwarmRunner.serviceName(userHash(userId));
const wsVolume = (userId: string) => SwarmRunner.workspaceVolume(userHash(userId));
const dataVolume = (userId: string) => SwarmRunner.dataVolume(userHash(userId));

beforeAll(async () => {
  await manager.ping();
  const before = (await manager.listNodes()).filter((n) => n.Spec?.Role === "worker" && n.Status?.State === "ready").length;
  const t0 = Date.now();
  const all = await workersUp(1);
  ownWorkers = before === 0;
  worker = all.find((n) => n.role === "worker" && n.hostname.startsWith("open-persona-swarm-w"))!.hostname;
  managerHost = all.find((n) => n.role === "manager")!.hostname;
  console.log(`swarm with worker ${worker} ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  model = await startScriptedModel(0, "0.0.0.0");
}, 300_000);

afterAll(async () => {
  const step = cleanupStep;
  // The sidecar leaves the overlay network with it, so it goes first.
  await step("sidecar", () => manager.getContainer(SIDECAR).remove({ force: true }));
  await step("services, volumes, networks", () => cleanSwarm(PREFIX, users.flatMap((u) => [wsVolume(u), dataVolume(u)]).concat(`${PREFIX}-probe-ws`)));
  await step("model", async () => model?.close());
  if (ownWorkers) await step("worker", () => workersDown(worker));
}, 180_000);

describe("the test swarm: a second engine in a container, joined as a worker", () => {
  const service = `${PREFIX}-probe`;
  const volume = `${PREFIX}-probe-ws`;

  it("runs a pinned service on the worker, keeps its named volume there across a task restart, and serves it over the overlay network", async () => {
    await manager.createNetwork({ Name: service, Driver: "overlay", Attachable: true, Labels: { [LABEL_MANAGED]: "true" } });
    const t0 = Date.now();
    await manager.createService({
      Name: service,
      Labels: { [LABEL_MANAGED]: "true" },
      TaskTemplate: {
        ContainerSpec: { Image: RUNNER_IMAGE, Mounts: [{ Type: "volume", Source: volume, Target: "/workspace" }] },
        Placement: { Constraints: [`node.hostname==${worker}`] },
        Networks: [{ Target: service }],
        RestartPolicy: { Condition: "any", Delay: 1_000_000_000 },
      },
      Mode: { Replicated: { Replicas: 1 } },
      // DNS round robin: a VIP needs IPVS, which some kernels lack (this one: CONFIG_IP_VS unset).
      EndpointSpec: { Mode: "dnsrr" },
    } as Docker.CreateServiceOptions);
    const first = await runningTask(service);
    console.log(`service created → its task runs on ${first.node}: ${Date.now() - t0} ms`);
    expect(first.node).toBe(worker);

    expect((await execOnNode(worker, first.containerId, `echo kept-${RUN} > /workspace/kept.txt`)).code).toBe(0);
    expect(await volumeOn(worker, volume)).toBe(true);
    expect(await volumeOn(managerHost, volume)).toBe(false);

    // The task dies; Swarm starts another one on the same node, with the same volume.
    await (await node(worker)).docker.getContainer(first.containerId).kill();
    const t1 = Date.now();
    let second = first;
    await waitFor(async () => (second = await runningTask(service)).containerId !== first.containerId, 60_000, "a new task");
    console.log(`task killed → replaced: ${Date.now() - t1} ms`);
    expect(second.node).toBe(worker);
    expect((await execOnNode(worker, second.containerId, "cat /workspace/kept.txt")).stdout.trim()).toBe(`kept-${RUN}`);

    // A container on the manager, on the same attachable overlay network, reaches it by name.
    const t2 = Date.now();
    const probe = await runOnNode(managerHost, `for i in $(seq 1 40); do timeout 5 wget -qO- http://${service}:4096/global/health && exit 0; sleep 1; done; exit 1`, { network: service });
    expect(probe.stdout, probe.stderr).toContain('"healthy":true');
    console.log(`manager → worker over the overlay network, opencode healthy after ${Date.now() - t2} ms`);
    expect((await tasksOf(service)).filter((t) => t.desired === "running").map((t) => t.node)).toEqual([worker]);
  }, 180_000);
});

describe("a swarm-mode sidecar (container on the manager) whose runners are placed on the worker", () => {
  const alice = user("alice");
  const bob = user("bob");
  const aliceChat = randomUUID();
  let url: string;

  const chat = (userId: string, content: string, chatId = randomUUID()) => gatewayChat(url, GATEWAY_KEY, userId, content, chatId);
  /** What the model was handed back as the output of the tools it called for `marker`. */
  const toolOutput = (marker: string) =>
    model.requests
      .filter((r) => r.lastUserText.includes(marker))
      .flatMap((r) => r.body.messages.filter((m) => m.role === "tool").map((m) => (typeof m.content === "string" ? m.content : JSON.stringify(m.content))))
      .join("\n");
  const sidecarLogs = async () => (await manager.getContainer(SIDECAR).logs({ stdout: true, stderr: true, tail: 60 })).toString("utf8");

  beforeAll(async () => {
    // Cached by its inputs (dist, node_modules): seconds when nothing changed.
    const built = await run("bash", [path.join(REPO, "services/sidecar/build-image.sh")], { cwd: REPO, env: { ...process.env, SIDECAR_IMAGE_BUILD: "local" }, timeout: 600_000, maxBuffer: 16 * 1024 * 1024 });
    console.log(built.stdout.trim().split("\n").pop());
    const port = await freePort();
    const env = {
      RUNNER_MODE: "swarm",
      RUNNER_IMAGE,
      RUNNER_NETWORK: NETWORK,
      RUNNER_PLACEMENT: `node.hostname==${worker}`,
      RUNNER_SECRET,
      RUNNER_IDLE_TIMEOUT: "0",
      RUNNER_START_TIMEOUT_MS: "120000",
      SIDECAR_API_KEYS: GATEWAY_KEY,
      STATE_ROOT: "/data/state",
      WORKSPACE_ROOT: "/data/workspaces",
      OPENCODE_CONFIG_CONTENT: JSON.stringify(scriptedOpencodeConfig(`http://host.docker.internal:${model.port}/v1`)),
      OPENCODE_DISABLE_MODELS_FETCH: "1",
      LOG_LEVEL: "debug",
    };
    const c = await manager.createContainer({
      name: SIDECAR,
      Image: "open-persona-sidecar:latest",
      User: "0:0",
      Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
      Labels: { "open-persona.test": RUN },
      ExposedPorts: { "8000/tcp": {} },
      HostConfig: {
        Binds: ["/var/run/docker.sock:/var/run/docker.sock"],
        PortBindings: { "8000/tcp": [{ HostIp: "127.0.0.1", HostPort: String(port) }] },
        ExtraHosts: ["host.docker.internal:host-gateway"],
      },
    });
    await c.start();
    url = `http://127.0.0.1:${port}`;
    await waitFor(async () => (await fetch(`${url}/readyz`).catch(() => undefined))?.status === 200, 60_000, "the sidecar to be ready").catch(async (e: Error) => {
      throw new Error(`${e.message}\n${await sidecarLogs()}`);
    });
    // Joined the runners' overlay network itself (RUNNER_NETWORK, created at its start).
    expect(Object.keys((await c.inspect()).NetworkSettings.Networks)).toContain(NETWORK);
  }, 600_000);

  afterEach(async (ctx) => {
    if (ctx.task.result?.state === "fail") console.log(`sidecar log (last lines):\n${await sidecarLogs().catch((e: Error) => e.message)}`);
  });

  it("answers a chat from a runner service on the worker; the agent's file is in the user's volume there, not on the manager", async () => {
    const t0 = Date.now();
    const turn = await chat(alice, say.write("where.txt", `alice-${RUN}`), aliceChat);
    console.log(`first turn (service create + task on the worker + healthy + turn): ${Date.now() - t0} ms`);
    expect(turn.error).toBeUndefined();
    expect(turn.text).toContain("wrote where.txt");

    const task = await runningTask(serviceOf(alice));
    expect(task.node).toBe(worker);
    const spec = (await manager.getService(serviceOf(alice)).inspect()).Spec;
    expect(spec.Labels).toMatchObject({ [LABEL_MANAGED]: "true", "open-persona.node": (await node(worker)).id, "open-persona.network": NETWORK });

    const read = await runOnNode(worker, "cat /w/where.txt", { volumes: { [wsVolume(alice)]: "/w" } });
    expect(read.stdout).toBe(`alice-${RUN}`);
    expect(await volumeOn(worker, dataVolume(alice))).toBe(true);
    expect(await volumeOn(managerHost, wsVolume(alice))).toBe(false);
    expect(await volumeOn(managerHost, dataVolume(alice))).toBe(false);
    // The worker container's memory: its engine and containerd, plus Alice's runner.
    console.log(`worker memory with one runner: ${(await run("docker", ["stats", "--no-stream", "--format", "{{.MemUsage}}", worker])).stdout.trim()}`);
  }, 180_000);

  it("keeps the chat's session when the runner's task is killed on the worker", async () => {
    const before = await runningTask(serviceOf(alice));
    await (await node(worker)).docker.getContainer(before.containerId).kill();
    let after = before;
    await waitFor(async () => (after = await runningTask(serviceOf(alice))).containerId !== before.containerId, 60_000, "Swarm to replace the task");
    expect(after.node).toBe(worker);

    // countTurns: the agent sees both user messages, so opencode kept the session in /data.
    const turn = await chat(alice, say.countTurns(), aliceChat);
    expect(turn.error).toBeUndefined();
    expect(turn.text).toBe("turns=2");
    expect((await runningTask(serviceOf(alice))).containerId).toBe(after.containerId);
  }, 180_000);

  it("keeps a runner on the worker from another user's workspace and runner, the Docker socket and privileges", async () => {
    const secretFile = `bob-secret-${RUN}.txt`;
    expect((await chat(bob, say.write(secretFile, `bob-only-${RUN}`))).error).toBeUndefined();
    expect((await runningTask(serviceOf(bob))).node).toBe(worker);

    // Nothing of the host, the engine or another user is in the runner's spec.
    for (const u of [alice, bob]) {
      const mounts = (await manager.getService(serviceOf(u)).inspect()).Spec.TaskTemplate.ContainerSpec.Mounts ?? [];
      expect(mounts.filter((m: { Type?: string }) => m.Type !== "tmpfs").map((m: { Source?: string }) => m.Source).sort()).toEqual([dataVolume(u), wsVolume(u)].sort());
    }

    // Alice's agent tries: her identity and privileges, the root file system, every process's
    // environment (the sidecar's secrets), the sockets, Bob's file anywhere it can look, and
    // Bob's runner API on the shared overlay network — without a password, and with the one it
    // has (its own, from its environment). The control: her own API takes hers.
    const marker = `probe-${randomUUID()}`;
    const bobApi = `http://${serviceOf(bob)}:4096`;
    const probe = (name: string, target: string, auth: boolean) =>
      `( if timeout 4 wget -q ${auth ? '--header "Authorization: Basic $AUTH"' : ""} -O /tmp/${name}.out '${target}' >/tmp/${name}.err 2>&1; then echo "${name}=OK $(head -c 200 /tmp/${name}.out | tr '\\n' ' ')"; else echo "${name}=FAIL $(head -c 200 /tmp/${name}.err | tr '\\n' ' ')"; fi )`;
    const command = [
      `echo ${marker}`,
      'AUTH="$(printf "opencode:%s" "$OPENCODE_SERVER_PASSWORD" | base64 | tr -d "\\n")"',
      'echo "uid=$(id -u)"',
      "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status",
      // Through sh -c: opencode's own guard refuses a `touch` outside the workspace before it runs.
      "sh -c ': > /ro-probe' 2>&1",
      "echo ENVALL; for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' <$f; done 2>/dev/null | sort -u",
      "ls -l /var/run/docker.sock /run/docker.sock /run/swarm-node 2>&1",
      "echo FOUND; find / -name 'bob-secret-*' -not -path '/proc/*' 2>/dev/null; echo END-FOUND",
      probe("own", "http://127.0.0.1:4096/global/health", true),
      probe("bob_nopw", `${bobApi}/global/health`, false),
      probe("bob_alicepw", `${bobApi}/global/health`, true),
      probe("bob_file", `${bobApi}/file/content?path=${secretFile}`, true),
    ].join("\n");
    const turn = await chat(alice, say.bash(command));
    expect(turn.error).toBeUndefined();
    const raw = toolOutput(marker);
    expect(raw).toContain(marker);
    const result = (name: string) => new RegExp(`^${name}=(OK|FAIL)(.*)$`, "m").exec(raw)?.slice(1) ?? [];

    expect(raw).toMatch(/^uid=1000$/m);
    expect(raw).toMatch(/^CapEff:\s+0+$/m);
    expect(raw).toMatch(/^CapBnd:\s+0+$/m);
    expect(raw).toMatch(/Read-only file system/);
    // Swarm's API (1.41) has no no-new-privileges for services (docker mode sets it): logged, not asserted.
    console.log(`runner on the worker: ${/^NoNewPrivs:.*$/m.exec(raw)?.[0] ?? "NoNewPrivs not shown"}`);
    expect(raw).toMatch(/^OPENCODE_SERVER_USERNAME=opencode$/m);
    for (const secret of [GATEWAY_KEY, RUNNER_SECRET]) expect(raw).not.toContain(secret);
    expect(raw).toMatch(/docker\.sock: No such file or directory/);
    expect(raw).toMatch(/swarm-node: No such file or directory/);
    expect(raw).toMatch(/FOUND\s*END-FOUND/);
    expect(raw).not.toContain(`bob-only-${RUN}`);
    expect(result("own")[0], raw).toBe("OK");
    expect(result("own")[1]).toContain('"healthy":true');
    // Bob's runner answers (the overlay network reaches it), and refuses: 401 each time.
    for (const name of ["bob_nopw", "bob_alicepw", "bob_file"]) {
      expect(result(name)[0], raw).toBe("FAIL");
      expect(result(name)[1]).toMatch(/401/);
    }
    // The file is in Bob's volume on the worker, and Alice's volume does not have it.
    expect((await runOnNode(worker, `cat /w/${secretFile}`, { volumes: { [wsVolume(bob)]: "/w" } })).stdout).toBe(`bob-only-${RUN}`);
    expect((await runOnNode(worker, `ls /w`, { volumes: { [wsVolume(alice)]: "/w" } })).stdout).not.toContain(secretFile);
  }, 180_000);
});

