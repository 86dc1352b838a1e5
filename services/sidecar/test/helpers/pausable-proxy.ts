/**
 * A TCP link to a server that a test can hold: while paused, connections are accepted but
 * not forwarded (a peer that hangs, rather than one that is down), and open ones are cut so
 * that keep-alive connections cannot slip through. Resuming forwards what was held.
 */
import net from "node:net";
import type { AddressInfo } from "node:net";

export interface PausableProxy {
  url: string;
  /** Connections accepted while paused, still waiting (their clients not gone). */
  readonly held: number;
  pause(): void;
  resume(): void;
  close(): Promise<void>;
}

export async function startPausableProxy(target: string): Promise<PausableProxy> {
  const { hostname, port } = new URL(target);
  const live = new Set<net.Socket>();
  let waiting: net.Socket[] = [];
  let paused = false;
  const link = (client: net.Socket) => {
    const upstream = net.connect(Number(port), hostname);
    live.add(client);
    const end = () => {
      live.delete(client);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) s.on("error", end).on("close", end);
    client.pipe(upstream);
    upstream.pipe(client);
  };
  const server = net.createServer((client) => {
    if (!paused) return link(client);
    client.on("error", () => {});
    waiting.push(client);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    get held() {
      return waiting.filter((c) => !c.destroyed && !c.readableEnded).length;
    },
    pause: () => {
      paused = true;
      for (const c of live) c.destroy();
    },
    resume: () => {
      paused = false;
      for (const c of waiting) if (!c.destroyed) link(c);
      waiting = [];
    },
    close: async () => {
      for (const c of [...live, ...waiting]) c.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}
