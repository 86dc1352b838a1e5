/**
 * Which container the sidecar itself runs in, if any (SIDECAR_CONTAINER).
 *
 * A sidecar in a container reaches a runner only after joining that runner's network; one on
 * the host (or in a container with `network_mode: host`) reaches every bridge through the
 * host's routes and must join nothing.
 *
 * `auto` looks for container ids in /proc/self/mountinfo (Docker bind-mounts the container's
 * /etc/hostname, /etc/hosts and /etc/resolv.conf from `.../containers/<id>/`, on cgroup v1 and
 * v2 alike) and /proc/self/cgroup, then tries the hostname (a container's default hostname is
 * its short id). A candidate counts only when the engine knows it *and* one of its network
 * addresses is assigned to an interface of this process: a host whose name happens to be a
 * container's name, or a sidecar talking to a remote engine, is not taken for that container.
 */
import fs from "node:fs/promises";
import os from "node:os";
import type Docker from "dockerode";

/** `auto`: detect; `none`: the sidecar is on the host; anything else: a container name or id. */
export type SelfContainerSetting = "auto" | "none" | (string & {});

/** Full container ids mentioned in a /proc/self/mountinfo or /proc/self/cgroup text. */
export function containerIdsIn(text: string): string[] {
  const ids = new Set<string>();
  for (const m of text.matchAll(/(?:\/containers\/|\/docker\/|docker-)([0-9a-f]{64})(?=[/.\s]|$)/gm)) ids.add(m[1]!);
  return [...ids];
}

/** The id of the container this process runs in, or undefined when it runs on the host. */
export async function findSelfContainer(docker: Docker, setting: SelfContainerSetting): Promise<string | undefined> {
  if (setting === "none") return undefined;
  if (setting !== "auto") {
    // Named by the operator: it must exist, and it is trusted without the address check.
    const info = await docker.getContainer(setting).inspect();
    return info.Id;
  }
  const texts = await Promise.all(["/proc/self/mountinfo", "/proc/self/cgroup"].map((f) => fs.readFile(f, "utf8").catch(() => "")));
  const candidates = [...containerIdsIn(texts.join("\n")), os.hostname()];
  const local = localAddresses();
  for (const candidate of candidates) {
    const info = await docker
      .getContainer(candidate)
      .inspect()
      .catch(() => undefined);
    const ips = Object.values(info?.NetworkSettings?.Networks ?? {}).map((n) => n.IPAddress);
    if (info && ips.some((ip) => ip && local.has(ip))) return info.Id;
  }
  return undefined;
}

function localAddresses(): Set<string> {
  return new Set(
    Object.values(os.networkInterfaces())
      .flat()
      .map((a) => a?.address)
      .filter((a): a is string => !!a),
  );
}
