/**
 * A round-robin HTTP proxy in front of sidecar replicas (what a load balancer does): each
 * request goes to the next replica, streamed both ways. Records which replica took each one.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";

export interface RoundRobinProxy {
  url: string;
  /** The replica index each request went to, in arrival order. */
  served: number[];
  close(): Promise<void>;
}

export async function startRoundRobinProxy(targets: () => string[]): Promise<RoundRobinProxy> {
  let next = 0;
  const served: number[] = [];
  const server = http.createServer((req, res) => {
    const list = targets();
    const i = next++ % list.length;
    served.push(i);
    const target = new URL(req.url ?? "/", list[i]);
    const upstream = http.request(target, { method: req.method, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on("error", () => {
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    });
    res.on("close", () => upstream.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    served,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}
