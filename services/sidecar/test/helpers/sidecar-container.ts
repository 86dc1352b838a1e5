/**
 * The sidecar run as a container from its image (open-persona-sidecar:latest, refreshed from
 * `dist` by services/sidecar/build-image.sh), as a deployment runs it: root inside for the
 * Docker socket, its port published on loopback for the test, its state in a host directory.
 */
import { execFileSync } from "node:child_process";
import path from "node:path";
import type Docker from "dockerode";

export const SIDECAR_IMAGE = "open-persona-sidecar:latest";
const REPO = path.resolve(import.meta.dirname, "../../../..");

/** Rebuilds the sidecar image when `dist` changed (hash-cached: a second call costs seconds). */
export function refreshSidecarImage(): void {
  execFileSync("bash", [path.join(REPO, "services/sidecar/build-image.sh")], { cwd: REPO, env: { ...process.env, SIDECAR_IMAGE_BUILD: "local" }, stdio: "pipe", timeout: 300_000 });
}

export interface SidecarContainer {
  name: string;
  url: string;
  logs(): Promise<string>;
  /** Log records (JSON lines) with this message. */
  logged(msg: string): Promise<Array<Record<string, unknown>>>;
  remove(): Promise<void>;
}

export interface SidecarContainerOptions {
  name: string;
  env: Record<string, string>;
  /** Host directory mounted as STATE_ROOT. */
  stateDir: string;
  labels?: Record<string, string>;
  readyTimeoutMs?: number;
}

export async function startSidecarContainer(docker: Docker, o: SidecarContainerOptions): Promise<SidecarContainer> {
  await docker.getContainer(o.name).remove({ force: true }).catch(() => {});
  const env = { HOST: "0.0.0.0", PORT: "8000", STATE_ROOT: "/data/state", ...o.env };
  const container = await docker.createContainer({
    name: o.name,
    Image: SIDECAR_IMAGE,
    User: "0:0",
    Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
    Labels: o.labels,
    ExposedPorts: { "8000/tcp": {} },
    HostConfig: {
      Binds: ["/var/run/docker.sock:/var/run/docker.sock", `${o.stateDir}:/data/state`],
      PortBindings: { "8000/tcp": [{ HostIp: "127.0.0.1", HostPort: "" }] },
      ExtraHosts: ["host.docker.internal:host-gateway"],
    },
  });
  await container.start();
  const port = Number((await container.inspect()).NetworkSettings.Ports["8000/tcp"]?.[0]?.HostPort);
  const url = `http://127.0.0.1:${port}`;
  const logs = async () => demux((await container.logs({ stdout: true, stderr: true })) as unknown as Buffer);
  const deadline = Date.now() + (o.readyTimeoutMs ?? 60_000);
  for (;;) {
    const ready = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2000) }).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ready) break;
    if (Date.now() > deadline) throw new Error(`sidecar container ${o.name} not ready:\n${(await logs()).slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  return {
    name: o.name,
    url,
    logs,
    async logged(msg) {
      return (await logs())
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => {
          try {
            return JSON.parse(l) as Record<string, unknown>;
          } catch {
            return {};
          }
        })
        .filter((r) => r.msg === msg);
    },
    remove: () => container.remove({ force: true }).then(() => undefined),
  };
}

/** A non-TTY container's log: frames of an 8-byte header (stream, 0, 0, 0, size as 32-bit big endian) and the bytes. */
function demux(buf: Buffer): string {
  const parts: Buffer[] = [];
  for (let at = 0; at + 8 <= buf.length; ) {
    const size = buf.readUInt32BE(at + 4);
    parts.push(buf.subarray(at + 8, at + 8 + size));
    at += 8 + size;
  }
  return Buffer.concat(parts).toString("utf8");
}
