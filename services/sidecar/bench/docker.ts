/**
 * What the runner-modes phase asks the Docker engine directly: is it there, how much memory a
 * runner container holds, and removing everything the phase made. The sidecar itself creates
 * the containers; the benchmark only observes them and cleans up after it.
 */
import type Docker from "dockerode";
import { DockerRunner, LABEL_USER } from "../src/runners/docker-runner.js";
import { dockerClient } from "../src/runners/registry.js";
import type { RunnerSample } from "./settle.js";

/** An engine that does not answer this fast is treated as absent (a dead socket can hang). */
const PING_TIMEOUT_MS = 5000;

export type EngineProbe = { ok: true; docker: Docker; version: string } | { ok: false; why: string };

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Same client the sidecar builds (DOCKER_HOST or the local socket), checked for the image too. */
export async function probeEngine(image: string): Promise<EngineProbe> {
  const docker = dockerClient(process.env.DOCKER_HOST || undefined);
  const where = process.env.DOCKER_HOST || "/var/run/docker.sock";
  try {
    await withTimeout(docker.ping(), PING_TIMEOUT_MS, "docker ping");
  } catch (e) {
    return { ok: false, why: `no Docker engine answered at ${where} (${(e as Error).message})` };
  }
  try {
    await withTimeout(docker.getImage(image).inspect(), PING_TIMEOUT_MS, "image inspect");
  } catch {
    return { ok: false, why: `runner image ${image} not found: build it with \`bash scripts/test-setup.sh\` or \`npm run build:runner-image\`` };
  }
  const { Version } = await docker.version();
  return { ok: true, docker, version: Version };
}

/** The user's runner container id (at most one: the sidecar never duplicates a user's runner). */
export async function runnerContainerId(docker: Docker, hash: string): Promise<string | undefined> {
  const found = await docker.listContainers({ all: true, filters: { label: [`${LABEL_USER}=${hash}`] } });
  return found[0]?.Id;
}

/** The memory counters docker reports under both cgroup versions (the typings only know v1). */
type MemoryCounters = Partial<Record<"total_inactive_file" | "inactive_file" | "cache", number>>;

/**
 * One-shot stats (no second sample for CPU deltas, so it answers at once): the cgroup's CPU
 * time and its working set, computed as `docker stats` does — usage minus total_inactive_file
 * (cgroup v1) or inactive_file (v2); older engines only give `cache`. No memory figure when
 * the engine keeps no memory accounting for the container.
 */
export async function containerSample(docker: Docker, id: string): Promise<RunnerSample> {
  const stats = await docker.getContainer(id).stats({ stream: false, "one-shot": true });
  const cpuMs = (stats.cpu_stats?.cpu_usage?.total_usage ?? 0) / 1e6;
  const usage = stats.memory_stats?.usage;
  if (!usage) return { cpuMs };
  const counters = (stats.memory_stats.stats ?? {}) as MemoryCounters;
  for (const key of ["total_inactive_file", "inactive_file", "cache"] as const) {
    const v = counters[key];
    if (v !== undefined && v < usage) return { cpuMs, memBytes: usage - v };
  }
  return { cpuMs, memBytes: usage };
}

/**
 * Removes the bench users' containers (running or not), data volumes and networks, then the
 * shared network of older sidecars.
 * Runs after the docker-mode sidecar is stopped, so nothing recreates them meanwhile. Each
 * step tolerates "already gone"; any other failure is reported, not thrown, so that one stuck
 * resource does not leave the others behind.
 */
export async function removeBenchResources(docker: Docker, hashes: readonly string[], network: string): Promise<string[]> {
  const problems: string[] = [];
  const gone = (e: unknown) => (e as { statusCode?: number }).statusCode === 404;
  const attempt = async (what: string, fn: () => Promise<unknown>) => {
    try {
      await fn();
    } catch (e) {
      if (!gone(e)) problems.push(`${what}: ${(e as Error).message}`);
    }
  };
  for (const hash of hashes) {
    const found = await docker.listContainers({ all: true, filters: { label: [`${LABEL_USER}=${hash}`] } }).catch(() => []);
    for (const c of found) await attempt(`container ${c.Id.slice(0, 12)}`, () => docker.getContainer(c.Id).remove({ force: true }));
    // By name too: a create the engine finished after the listing still carries this name.
    await attempt(`container ${DockerRunner.containerName(hash)}`, () => docker.getContainer(DockerRunner.containerName(hash)).remove({ force: true }));
    await attempt(`volume ${DockerRunner.volumeName(hash)}`, () => docker.getVolume(DockerRunner.volumeName(hash)).remove());
    // Each user's runner has its own network, `<RUNNER_NETWORK>-<hash>` (runners/docker-network.ts).
    await attempt(`network ${network}-${hash}`, () => docker.getNetwork(`${network}-${hash}`).remove());
  }
  await attempt(`network ${network}`, () => docker.getNetwork(network).remove());
  return problems;
}
