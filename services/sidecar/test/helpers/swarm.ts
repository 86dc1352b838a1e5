/**
 * The test swarm (RUNNER_MODE=swarm): this machine's engine as its manager
 * (scripts/swarm-setup.sh) and, for multi-node tests, worker engines in containers on it
 * (scripts/swarm-workers.sh), each reached through a socket it shares with the host. Here:
 * bring them up and down, see which node a service's task runs on, run a command on a given
 * node, and remove what a test made — services, volumes (on every node) and networks.
 */
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import path from "node:path";
import { promisify } from "node:util";
import Docker from "dockerode";
import { SIDECAR_DIR, waitFor } from "./harness.js";

const run = promisify(execFile);
const REPO = path.resolve(SIDECAR_DIR, "../..");
const MANAGER_SOCKET = "/var/run/docker.sock";
export const LABEL_MANAGED = "open-persona.managed";

/** The manager's engine (this machine's). */
export const manager = new Docker({ socketPath: MANAGER_SOCKET });

export interface SwarmNode {
  /** The node's hostname (a worker's is its container's name). */
  hostname: string;
  id: string;
  role: "manager" | "worker";
  /** The node's own engine: its containers, images and volumes. */
  socketPath: string;
  docker: Docker;
}

export interface TaskPlacement {
  id: string;
  /** Hostname of the node it was given to. */
  node: string;
  state: string;
  desired: string;
  /** Set once its container exists (on `node`'s engine). */
  containerId?: string;
  error?: string;
}

async function script(name: string, args: string[], timeoutMs: number): Promise<string> {
  try {
    const { stdout, stderr } = await run("bash", [path.join(REPO, "scripts", name), ...args], { cwd: REPO, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 });
    return stdout + stderr;
  } catch (e) {
    const err = e as Error & { stdout?: string; stderr?: string };
    throw new Error(`scripts/${name} ${args.join(" ")} failed: ${err.message}\n${err.stdout ?? ""}${err.stderr ?? ""}`);
  }
}

/** Makes this engine a swarm manager workers can join (idempotent); the address it advertises. */
export async function ensureSwarm(): Promise<string> {
  await script("swarm-setup.sh", [], 60_000);
  return (await manager.info()).Swarm.NodeAddr as string;
}

/** Workers 1..n up, joined, ready and holding the runner image (idempotent); every node after. */
export async function workersUp(n: number): Promise<SwarmNode[]> {
  await ensureSwarm();
  await script("swarm-workers.sh", ["up", String(n)], 300_000);
  return nodes();
}

/** Removes the workers named (default: every one): node entries, containers, their volumes. */
export async function workersDown(...names: string[]): Promise<void> {
  await script("swarm-workers.sh", ["down", ...names], 180_000);
}

/** The swarm's nodes that are ready, each with its own engine. */
export async function nodes(): Promise<SwarmNode[]> {
  const workers = new Map<string, string>();
  for (const line of (await script("swarm-workers.sh", ["ls"], 60_000)).split("\n")) {
    const [name, socket] = line.trim().split(/\s+/);
    if (name && socket?.startsWith("unix://")) workers.set(name, socket.slice("unix://".length));
  }
  const list = await manager.listNodes();
  return list
    .filter((n) => n.Status?.State === "ready")
    .flatMap((n): SwarmNode[] => {
      const hostname = n.Description?.Hostname ?? "";
      const role = n.Spec?.Role === "manager" ? "manager" : "worker";
      const socketPath = role === "manager" ? MANAGER_SOCKET : workers.get(hostname);
      // A worker not started by swarm-workers.sh (another machine) has no engine reachable here.
      return socketPath ? [{ hostname, id: n.ID ?? "", role, socketPath, docker: new Docker({ socketPath }) }] : [];
    });
}

/** The node of this hostname (throws when it is not ready or not reachable from here). */
export async function node(hostname: string): Promise<SwarmNode> {
  const found = (await nodes()).find((n) => n.hostname === hostname);
  if (!found) throw new Error(`no ready swarm node ${hostname} with an engine reachable from here`);
  return found;
}

/** A service's tasks, newest first, with the node each was given to. */
export async function tasksOf(service: string): Promise<TaskPlacement[]> {
  const [tasks, all] = await Promise.all([manager.listTasks({ filters: { service: [service] } }), manager.listNodes()]);
  const hostnames = new Map(all.map((n) => [n.ID ?? "", n.Description?.Hostname ?? ""]));
  type Task = { ID?: string; NodeID?: string; DesiredState?: string; UpdatedAt?: string; Status?: { State?: string; Err?: string; ContainerStatus?: { ContainerID?: string } } };
  return (tasks as Task[])
    .sort((a, b) => (b.UpdatedAt ?? "").localeCompare(a.UpdatedAt ?? ""))
    .map((t) => ({
      id: t.ID ?? "",
      node: hostnames.get(t.NodeID ?? "") ?? "",
      state: t.Status?.State ?? "",
      desired: t.DesiredState ?? "",
      containerId: t.Status?.ContainerStatus?.ContainerID || undefined,
      error: t.Status?.Err || undefined,
    }));
}

/** The service's one running task (waits for it), and its container on its node. */
export async function runningTask(service: string, timeoutMs = 60_000): Promise<TaskPlacement & { containerId: string }> {
  let found: TaskPlacement | undefined;
  await waitFor(
    async () => {
      found = (await tasksOf(service)).find((t) => t.state === "running" && t.desired === "running" && t.containerId);
      return !!found;
    },
    timeoutMs,
    `a running task of ${service}`,
  );
  return found as TaskPlacement & { containerId: string };
}

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `command` (sh -c) in a new container on the node's own engine, removed afterwards:
 * e.g. reads a volume that lives on that node (a volume it names is created when absent: ask
 * volumeOn first). Defaults: the runner image, as root. Bound each network call in `command`
 * (`timeout 5 wget …`; Debian's static busybox wget segfaults with -T): a connection to a
 * task that just died can hang for minutes.
 */
export async function runOnNode(
  hostname: string,
  command: string,
  opts: { image?: string; volumes?: Record<string, string>; network?: string; user?: string } = {},
): Promise<CommandResult> {
  const n = await node(hostname);
  const name = `op-run-${randomUUID().slice(0, 8)}`;
  const host = ["-H", `unix://${n.socketPath}`];
  const args = [...host, "run", "--rm", "--name", name, "--user", opts.user ?? "0:0", "--entrypoint", "/bin/sh"];
  for (const [volume, target] of Object.entries(opts.volumes ?? {})) args.push("--mount", `type=volume,src=${volume},dst=${target}`);
  if (opts.network) args.push("--network", opts.network);
  args.push(opts.image ?? "open-persona-runner:latest", "-c", command);
  try {
    return await dockerCli(args);
  } finally {
    // A client that timed out leaves its container running (and on its network).
    await dockerCli([...host, "rm", "-f", name]).catch(() => undefined);
  }
}

/** Runs `command` (sh -c) inside a running container on the node (e.g. a service's task). */
export async function execOnNode(hostname: string, containerId: string, command: string): Promise<CommandResult> {
  const n = await node(hostname);
  return dockerCli(["-H", `unix://${n.socketPath}`, "exec", containerId, "/bin/sh", "-c", command]);
}

/** Whether a volume of this name exists on the node's engine. */
export async function volumeOn(hostname: string, volume: string): Promise<boolean> {
  const n = await node(hostname);
  return n.docker
    .getVolume(volume)
    .inspect()
    .then(() => true)
    .catch(() => false);
}

async function dockerCli(args: string[]): Promise<CommandResult> {
  try {
    const { stdout, stderr } = await run("docker", args, { timeout: 120_000, maxBuffer: 16 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (e) {
    const err = e as Error & { code?: number | string; stdout?: string; stderr?: string };
    if (typeof err.code !== "number") throw e;
    return { code: err.code, stdout: err.stdout ?? "", stderr: err.stderr ?? "" };
  }
}

/**
 * Removes what a test made: services labelled open-persona.managed=true whose name or
 * open-persona.network label starts with `prefix`, then (once their tasks are gone from every
 * node) the named volumes on every node, and the networks labelled managed whose name starts
 * with `prefix`. Runner volumes are named by user hash, not by test: pass them in `volumes`.
 * Each step on its own: one failing must not leave the others' objects behind.
 */
export async function cleanSwarm(prefix: string, volumes: string[] = []): Promise<void> {
  const warn = (what: string, e: unknown) => console.warn(`swarm cleanup: ${what}: ${(e as Error).message}`);
  const services = (await manager.listServices({ filters: { label: [`${LABEL_MANAGED}=true`] } }).catch((e) => (warn("services", e), []))).filter(
    (s) => s.Spec?.Name?.startsWith(prefix) || s.Spec?.Labels?.["open-persona.network"]?.startsWith(prefix),
  );
  for (const s of services) await manager.getService(s.ID).remove().catch((e) => warn(`service ${s.Spec?.Name}`, e));
  const all = await nodes().catch((e) => (warn("nodes", e), [] as SwarmNode[]));
  // A removed service's containers stop within their grace period (10 s for runners).
  await waitFor(
    async () => {
      for (const n of all) {
        const left = await n.docker.listContainers({ all: true }).catch(() => []);
        if (left.some((c) => services.some((s) => c.Labels["com.docker.swarm.service.id"] === s.ID))) return false;
      }
      return true;
    },
    60_000,
    "the removed services' containers to go",
  ).catch((e) => warn("tasks", e));
  for (const n of all) {
    for (const v of volumes) {
      await n.docker
        .getVolume(v)
        .remove()
        .catch((e: Error & { statusCode?: number }) => e.statusCode !== 404 && warn(`volume ${v} on ${n.hostname}`, e));
    }
  }
  const networks = await manager.listNetworks({ filters: { label: [`${LABEL_MANAGED}=true`] } }).catch((e) => (warn("networks", e), []));
  for (const net of networks.filter((x) => x.Name.startsWith(prefix))) {
    // Containers on it (a sidecar) go first; an overlay network leaves the workers once unused.
    await manager
      .getNetwork(net.Id)
      .remove()
      .catch((e) => warn(`network ${net.Name}`, e));
  }
}
