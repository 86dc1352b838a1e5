/**
 * RUNNER_MODE=swarm on the real engine's swarm (scripts/swarm-setup.sh makes this machine a
 * manager), the way it is deployed: the sidecar is a container from its image on the runners'
 * overlay network (it creates the network and joins it), reaching each user's runner service by
 * name. Covered: a service per user, pinned to a node, with node-local volumes and docker
 * mode's hardening; concurrent first requests make one service; a killed task is replaced and
 * the chat's session survives; a restarted sidecar adopts the services; idle runners are scaled
 * to zero with their data kept and come back on the next request; a spec change rolls the
 * service once no turn runs; one user's agent cannot get into another's runner.
 * Each run uses its own network and user ids, and removes what it made.
 */
import { randomUUID } from "node:crypto";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LABEL_NODE, SwarmRunner } from "../../src/runners/swarm-runner.js";
import { userHash } from "../../src/workspace/user-space.js";
import { say, scriptedOpencodeConfig, startScriptedModel, toolOutput, type ScriptedModel } from "../fixtures/scripted-model.js";
import { gatewayChat } from "../helpers/gateway-chat.js";
import { tempDir, waitFor, cleanupStep } from "../helpers/harness.js";
import { refreshSidecarImage, startSidecarContainer, type SidecarContainer } from "../helpers/sidecar-container.js";

const docker = new Docker({ socketPath: "/var/run/docker.sock" });
const RUN = randomUUID().slice(0, 8);
const NETWORK = `op-swarm-${RUN}`;
const GATEWAY_KEY = `gw-${RUN}`;
const SECRET = `swarm-secret-${RUN}-0123456789`;
const LABELS = { "open-persona.test": RUN };
/** A runner service's first start (create, schedule, volumes, opencode booting) on a loaded 2-core machine. */
const SLOW = 180_000;

let model: ScriptedModel;
let stateDir: string;
const sidecars: SidecarContainer[] = [];
const users: string[] = [];

const user = (name: string) => {
  const id = `${name}-${RUN}@example.com`;
  users.push(id);
  return id;
};
const serviceName = (userId: string) => SwarmRunner.serviceName(userHash(userId));

function env(extra: Record<string, string> = {}): Record<string, string> {
  return {
    RUNNER_MODE: "swarm",
    RUNNER_NETWORK: NETWORK,
    RUNNER_SECRET: SECRET,
    RUNNER_IDLE_TIMEOUT: "0",
    // This node only (other nodes may have joined: swarm-multinode.test.ts): volumes are read here.
    RUNNER_PLACEMENT: "node.role==manager",
    SIDECAR_API_KEYS: GATEWAY_KEY,
    OPENCODE_CONFIG_CONTENT: JSON.stringify(scriptedOpencodeConfig(`http://host.docker.internal:${model.port}/v1`)),
    OPENCODE_DISABLE_MODELS_FETCH: "1",
    LOG_LEVEL: "debug",
    ...extra,
  };
}

async function sidecar(extra: Record<string, string> = {}): Promise<SidecarContainer> {
  const sc = await startSidecarContainer(docker, { name: `op-swarm-sidecar-${RUN}-${sidecars.length}`, env: env(extra), stateDir, labels: LABELS });
  sidecars.push(sc);
  return sc;
}

const chat = (sc: SidecarContainer, userId: string, content: string, chatId = randomUUID()) => gatewayChat(sc.url, GATEWAY_KEY, userId, content, chatId);

/** The user's runner services (there must be one at most). */
async function servicesOf(userId: string) {
  return docker.listServices({ filters: { label: [`open-persona.user=${userHash(userId)}`, `open-persona.network=${NETWORK}`] } });
}
async function serviceOf(userId: string) {
  const list = await servicesOf(userId);
  expect(list).toHaveLength(1);
  return docker.getService(list[0]!.ID).inspect();
}
interface Task {
  ID: string;
  NodeID: string;
  DesiredState: string;
  Status: { State: string; ContainerStatus?: { ContainerID?: string } };
}
async function runningTasks(userId: string): Promise<Task[]> {
  const tasks = (await docker.listTasks({ filters: { service: [serviceName(userId)] } })) as Task[];
  // Running whatever Swarm wants of it: a task being stopped still runs (and answers) until it has stopped.
  return tasks.filter((t) => t.Status.State === "running");
}
/** Runs a command in a throwaway container with the user's workspace volume (on this node). */
async function inWorkspace(userId: string, command: string): Promise<string> {
  const c = await docker.createContainer({
    Image: "open-persona-runner:latest",
    Entrypoint: ["/bin/sh", "-c", command],
    Tty: true,
    Labels: LABELS,
    HostConfig: { Mounts: [{ Type: "volume", Source: SwarmRunner.workspaceVolume(userHash(userId)), Target: "/w", ReadOnly: true }] },
  });
  await c.start();
  await c.wait();
  // A TTY: the log is the raw output, without the engine's stream framing.
  const out = ((await c.logs({ stdout: true, stderr: true })) as unknown as Buffer).toString("utf8");
  await c.remove({ force: true });
  return out.trim();
}

beforeAll(async () => {
  const info = (await docker.info()) as { Swarm?: { LocalNodeState?: string; ControlAvailable?: boolean } };
  expect(info.Swarm?.LocalNodeState, "the engine must be a swarm manager (scripts/swarm-setup.sh)").toBe("active");
  expect(info.Swarm?.ControlAvailable).toBe(true);
  refreshSidecarImage();
  model = await startScriptedModel(0, "0.0.0.0");
  stateDir = tempDir("op-swarm-");
}, 300_000);

afterAll(async () => {
  const step = cleanupStep;
  for (const sc of sidecars) await step(`sidecar ${sc.name}`, () => sc.remove());
  const services = await docker.listServices({ filters: { label: [`open-persona.network=${NETWORK}`] } });
  for (const s of services) await step(`service ${s.ID}`, () => docker.getService(s.ID).remove());
  // Volumes are freed once the tasks' containers are gone.
  await step("tasks", () => waitFor(async () => (await docker.listContainers({ all: true, filters: { label: [`open-persona.network=${NETWORK}`] } })).length === 0, 60_000, "runner tasks gone"));
  for (const id of users) {
    for (const v of [SwarmRunner.workspaceVolume(userHash(id)), SwarmRunner.dataVolume(userHash(id))]) await step(`volume ${v}`, () => docker.getVolume(v).remove());
  }
  await step("network", () => docker.getNetwork(NETWORK).remove());
  await step("test containers", async () => {
    for (const c of await docker.listContainers({ all: true, filters: { label: [`open-persona.test=${RUN}`] } })) await docker.getContainer(c.Id).remove({ force: true });
  });
  await model?.close();
}, 180_000);

describe("a runner service per user", () => {
  let sc: SidecarContainer;
  const alice = user("alice");
  const bob = user("bob");
  const aliceChat = randomUUID();

  beforeAll(async () => {
    sc = await sidecar();
  }, SLOW);

  it("creates one pinned, hardened service per user, reached by name, with the workspace in the user's own volume", async () => {
    const started = Date.now();
    const first = await chat(sc, alice, say.write("notes/hello.txt", `from alice ${RUN}`), aliceChat);
    expect(first.error).toBeUndefined();
    console.log(`swarm runner cold start (service create → answer): ${Date.now() - started} ms`);
    expect((await chat(sc, bob, say.text("bob here"))).text).toBe("bob here");

    const [a, b] = [await serviceOf(alice), await serviceOf(bob)];
    expect(a.ID).not.toBe(b.ID);
    const self = (await docker.info()) as { Swarm: { NodeID: string } };
    for (const s of [a, b]) {
      expect(s.Spec?.Mode?.Replicated?.Replicas).toBe(1);
      expect(s.Spec?.Labels?.[LABEL_NODE]).toBe(self.Swarm.NodeID);
      const task = s.Spec!.TaskTemplate as Docker.ContainerTaskSpec;
      expect(task.Placement?.Constraints).toContain(`node.id==${self.Swarm.NodeID}`);
      expect(task.ContainerSpec?.User).toBe("1000:1000");
      expect(task.ContainerSpec?.ReadOnly).toBe(true);
      expect(task.ContainerSpec?.CapabilityDrop).toEqual(["ALL"]);
      expect(task.ContainerSpec?.Mounts?.map((m) => m.Target).sort()).toEqual(["/data", "/tmp", "/workspace"]);
      expect(task.ContainerSpec?.Mounts?.some((m) => m.Source?.includes("docker.sock"))).toBe(false);
      // No port is published anywhere: runners are reached on the overlay network only.
      expect(s.Endpoint?.Ports ?? []).toEqual([]);
    }
    // The file the agent wrote is in alice's workspace volume, and only there.
    expect(await inWorkspace(alice, "cat /w/notes/hello.txt")).toBe(`from alice ${RUN}`);
    expect(await inWorkspace(bob, "ls -A /w")).toBe("");
  }, SLOW);

  it("concurrent first requests of a new user make one service", async () => {
    const carol = user("carol");
    const turns = await Promise.all([1, 2, 3].map((i) => chat(sc, carol, say.text(`carol ${i}`))));
    expect(turns.map((t) => t.error)).toEqual([undefined, undefined, undefined]);
    expect(turns.map((t) => t.text).sort()).toEqual(["carol 1", "carol 2", "carol 3"]);
    expect(await servicesOf(carol)).toHaveLength(1);
    expect(await runningTasks(carol)).toHaveLength(1);
  }, SLOW);

  it("a killed task is replaced by Swarm and the chat's session survives", async () => {
    expect((await chat(sc, alice, say.countTurns(), aliceChat)).text).toBe("turns=2");
    const [before] = await runningTasks(alice);
    await docker.getContainer(before!.Status.ContainerStatus!.ContainerID!).kill();
    const after = await chat(sc, alice, say.countTurns(), aliceChat);
    expect(after.error).toBeUndefined();
    expect(after.text).toBe("turns=3");
    const [now] = await runningTasks(alice);
    expect(now!.ID).not.toBe(before!.ID);
    expect(now!.NodeID).toBe(before!.NodeID);
    expect(await servicesOf(alice)).toHaveLength(1);
  }, SLOW);

  it("one user's agent cannot get into another user's runner or the engine", async () => {
    const marker = `probe-${RUN}`;
    const bobUrl = `http://${serviceName(bob)}:4096/session`;
    // Paths outside the workspace go through variables: opencode's static external_directory
    // rule refuses commands that name them (the runner's own limits are what is tested here).
    const command = [
      `echo ${marker}`,
      // Another runner answers on the shared network, but only to its own user's password.
      `if timeout 5 wget -q -O out.tmp '${bobUrl}' 2>err.tmp; then echo "bob=OK"; else echo "bob=FAIL $(head -c 200 err.tmp)"; fi`,
      `echo "uid=$(id -u)"`,
      `p=/proc/self; grep CapEff $p/status`,
      `d=/var/run; ls $d/docker.sock 2>/dev/null && echo sock=present || echo sock=absent`,
      `r=/; touch \${r}probe 2>/dev/null && echo root=writable || echo root=readonly`,
    ].join("\n");
    const turn = await chat(sc, alice, say.bash(command));
    expect(turn.error).toBeUndefined();
    const out = toolOutput(model, marker);
    expect(out).toContain(marker);
    expect(out).toMatch(/bob=FAIL .*401/);
    expect(out).toContain("uid=1000");
    expect(out).toMatch(/CapEff:\s+0000000000000000/);
    expect(out).toContain("sock=absent");
    expect(out).toContain("root=readonly");
    // Bob's data is nowhere in alice's runner: her own workspace is the only one mounted.
    expect(await inWorkspace(alice, "ls -A /w")).not.toContain("bob");
  }, SLOW);

  it("a restarted sidecar adopts the running services: same tasks, sessions kept", async () => {
    const [task] = await runningTasks(alice);
    await sc.remove();
    sidecars.splice(sidecars.indexOf(sc), 1);
    sc = await sidecar();
    await waitFor(async () => (await sc.logged("adopted running runner service")).length >= 2, 60_000, "services adopted");
    const turn = await chat(sc, alice, say.countTurns(), aliceChat);
    expect(turn.text).toBe("turns=4");
    expect((await runningTasks(alice)).map((t) => t.ID)).toEqual([task!.ID]);
    expect(await servicesOf(alice)).toHaveLength(1);
  }, SLOW);

  it("a spec change rolls the service once no turn runs: same node, same volumes, same session", async () => {
    const before = await serviceOf(alice);
    const [task] = await runningTasks(alice);
    await sc.remove();
    sidecars.splice(sidecars.indexOf(sc), 1);
    // Another runner environment: every service's spec hash changes.
    sc = await sidecar({ OPENCODE_EXPERIMENTAL_SPEC_PROBE: RUN });
    const turn = await chat(sc, alice, say.countTurns(), aliceChat);
    expect(turn.error).toBeUndefined();
    expect(turn.text).toBe("turns=5");
    const after = await serviceOf(alice);
    expect(after.ID).toBe(before.ID);
    expect(after.Spec?.Labels?.["open-persona.spec-hash"]).not.toBe(before.Spec?.Labels?.["open-persona.spec-hash"]);
    expect(after.Spec?.Labels?.[LABEL_NODE]).toBe(before.Spec?.Labels?.[LABEL_NODE]);
    const env = (after.Spec!.TaskTemplate as Docker.ContainerTaskSpec).ContainerSpec?.Env ?? [];
    expect(env).toContain(`OPENCODE_EXPERIMENTAL_SPEC_PROBE=${RUN}`);
    const [now] = await runningTasks(alice);
    expect(now!.ID).not.toBe(task!.ID);
    expect(await inWorkspace(alice, "cat /w/notes/hello.txt")).toBe(`from alice ${RUN}`);
  }, SLOW);
});

describe("idle runners", () => {
  it("are scaled to zero with spec and data kept, and the next request scales them up with the session", async () => {
    const sc = await sidecar({ RUNNER_IDLE_TIMEOUT: "3" });
    const dora = user("dora");
    const chatId = randomUUID();
    expect((await chat(sc, dora, say.write("kept.txt", `dora ${RUN}`), chatId)).error).toBeUndefined();
    const created = await serviceOf(dora);
    await waitFor(async () => (await serviceOf(dora)).Spec?.Mode?.Replicated?.Replicas === 0, 60_000, "scaled to zero");
    await waitFor(async () => (await runningTasks(dora)).length === 0, 60_000, "its task stopped");
    // Spec and volumes stay: the same service, the file still in the volume.
    expect((await serviceOf(dora)).ID).toBe(created.ID);
    expect(await inWorkspace(dora, "cat /w/kept.txt")).toBe(`dora ${RUN}`);

    const started = Date.now();
    const back = await chat(sc, dora, say.countTurns(), chatId);
    console.log(`swarm runner start from zero (scale up → answer): ${Date.now() - started} ms`);
    expect(back.error).toBeUndefined();
    expect(back.text).toBe("turns=2");
    expect((await serviceOf(dora)).Spec?.Mode?.Replicated?.Replicas).toBe(1);
    expect(await runningTasks(dora)).toHaveLength(1);
  }, SLOW);
});
