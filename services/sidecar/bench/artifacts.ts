/**
 * Artifacts: what showing a turn's artifacts adds to the turn, and what serving a link costs.
 * - Collect: `ArtifactService.collect` (the walk of the workspace at the turn's end, then
 *   reading, hashing, storing and signing what changed) on workspaces of 100, 2 000 and
 *   20 000 files (in directories of 100), after a turn that wrote four artifacts (page, SVG,
 *   PNG, PDF) and after one that wrote nothing. This runs between the agent's last event and
 *   the answer's end, so it is the latency artifacts add to every turn.
 * - Serve: sequential GETs of one 1 MiB PNG link through the real route handler.
 * BENCH_ARTIFACTS=0 skips the phase; BENCH_ARTIFACTS_ITERATIONS (15) sizes it.
 */
import fs from "node:fs";
import type { AddressInfo } from "node:net";
import path from "node:path";
import express from "express";
import { pino } from "pino";
import { ArtifactService } from "../src/artifacts/artifact-service.js";
import { FileArtifactStore } from "../src/artifacts/artifact-store.js";
import { errorHandler } from "../src/http/middleware.js";
import { serveArtifact } from "../src/http/artifacts.js";
import { SyncFilter } from "../src/sync/sync-filter.js";
import { userSpace } from "../src/workspace/user-space.js";
import { minimalPdf, solidPng } from "../test/helpers/sample-files.js";
import { tempDir } from "../test/helpers/harness.js";
import { spread, type Spread } from "./stats.js";

export const WORKSPACE_SIZES = [100, 2_000, 20_000];

export interface CollectFigures {
  files: number;
  /** A turn that wrote 4 artifacts. */
  withArtifactsMs: Spread;
  /** A turn that wrote none (the walk alone). */
  noneMs: Spread;
}

export interface ArtifactsFigures {
  iterations: number;
  skipped?: string;
  error?: string;
  collect: CollectFigures[];
  serve?: { bytes: number; requests: number; ms: Spread; mbPerS: number };
}

export function emptyArtifacts(iterations: number, why: { skipped?: string; error?: string }): ArtifactsFigures {
  return { iterations, collect: [], ...why };
}

const silent = pino({ level: "silent" });

function service(stateRoot: string): ArtifactService {
  return new ArtifactService({
    filter: new SyncFilter({ maxBytes: 10 * 1024 * 1024, allowHtml: true }),
    store: new FileArtifactStore(stateRoot),
    signingKey: async () => "bench-key-".repeat(4),
    maxBytes: 10 * 1024 * 1024,
    maxPerTurn: 8,
    ttlS: 3600,
    collectTimeoutMs: 60_000,
    log: silent,
  });
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e6;
}

export async function artifactsPhase(iterations: number, log: (msg: string) => void): Promise<ArtifactsFigures> {
  const root = tempDir("op-bench-artifacts-");
  try {
    const svc = service(path.join(root, "state"));
    const collect: CollectFigures[] = [];
    const png = solidPng(64, 64, [10, 120, 200]);
    const pdf = minimalPdf();
    for (const files of WORKSPACE_SIZES) {
      const space = userSpace(path.join(root, `ws-${files}`), path.join(root, "state"), "0123456789abcdef");
      for (let i = 0; i < files; i++) {
        const dir = path.join(space.workspaceDir, `d${Math.floor(i / 100)}`);
        if (i % 100 === 0) fs.mkdirSync(dir, { recursive: true });
        // A mixed tree: mostly source files, some pages from earlier turns.
        fs.writeFileSync(path.join(dir, i % 50 === 0 ? `old${i}.html` : `f${i}.ts`), `export const v${i} = ${i};\n`);
      }
      await new Promise((r) => setTimeout(r, 100));
      const withArtifacts: number[] = [];
      const none: number[] = [];
      for (let it = 0; it < iterations; it++) {
        // Turns are never this close; the finder counts files from 50 ms before a turn began.
        await new Promise((r) => setTimeout(r, 80));
        const since = Date.now();
        none.push(await timed(() => svc.collect(space, since, silent)));
        const out = path.join(space.workspaceDir, `out${it}`);
        fs.mkdirSync(out);
        fs.writeFileSync(path.join(out, "page.html"), `<h1>turn ${it}</h1>`);
        fs.writeFileSync(path.join(out, "chart.svg"), `<svg xmlns="http://www.w3.org/2000/svg"><text>${it}</text></svg>`);
        fs.writeFileSync(path.join(out, "plot.png"), png);
        fs.writeFileSync(path.join(out, "report.pdf"), pdf);
        let found = 0;
        withArtifacts.push(await timed(async () => (found = (await svc.collect(space, since, silent)).items.length)));
        if (found !== 4) throw new Error(`expected 4 artifacts in a ${files}-file workspace, found ${found}`);
      }
      collect.push({ files, withArtifactsMs: spread(withArtifacts), noneMs: spread(none) });
      log(`artifacts: collect in a ${files}-file workspace: ${collect.at(-1)!.withArtifactsMs.p50} ms (4 artifacts), ${collect.at(-1)!.noneMs.p50} ms (none)`);
    }
    return { iterations, collect, serve: await serveFigures(svc, root) };
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

/** Sequential GETs of one 1 MiB image through the route handler the sidecar mounts. */
async function serveFigures(svc: ArtifactService, root: string): Promise<ArtifactsFigures["serve"]> {
  const space = userSpace(path.join(root, "ws-serve"), path.join(root, "state"), "fedcba9876543210");
  fs.mkdirSync(space.workspaceDir, { recursive: true });
  const big = Buffer.concat([solidPng(8, 8, [0, 0, 0]), Buffer.alloc(1024 * 1024 - 100, 7)]);
  const since = Date.now();
  fs.writeFileSync(path.join(space.workspaceDir, "big.png"), big);
  const [item] = (await svc.collect(space, since, silent)).items;
  const app = express();
  app.get("/v1/artifacts/:token/:name", serveArtifact(svc));
  app.use(errorHandler);
  const server = await new Promise<ReturnType<typeof app.listen>>((resolve) => {
    const s = app.listen(0, "127.0.0.1", () => resolve(s));
  });
  try {
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/artifacts/${item!.token}/big.png`;
    const requests = 200;
    const ms: number[] = [];
    for (let i = 0; i < requests; i++) {
      ms.push(
        await timed(async () => {
          const res = await fetch(url);
          const body = Buffer.from(await res.arrayBuffer());
          if (res.status !== 200 || body.length !== big.length) throw new Error(`artifact link answered ${res.status}, ${body.length} bytes`);
        }),
      );
    }
    const total = ms.reduce((a, b) => a + b, 0);
    return { bytes: big.length, requests, ms: spread(ms), mbPerS: Math.round(((big.length * requests) / 1024 / 1024 / (total / 1000)) * 10) / 10 };
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
}

/** The report's section. */
export function renderArtifacts(f: ArtifactsFigures): string[] {
  const title = "Artifacts: what collecting a turn's artifacts adds to its end, and serving a link";
  if (f.skipped) return [title, `  skipped (${f.skipped})`];
  if (f.error) return [title, `  FAILED: ${f.error.split("\n")[0]}`];
  const num = (n: number, w = 10) => n.toFixed(2).padStart(w);
  return [
    `${title}; ${f.iterations} iterations; times in ms`,
    `  ${"workspace files".padEnd(18)}${"4 made p50".padStart(10)}${"p95".padStart(10)}${"none p50".padStart(10)}${"p95".padStart(10)}`,
    ...f.collect.map((c) => `  ${String(c.files).padEnd(18)}${num(c.withArtifactsMs.p50)}${num(c.withArtifactsMs.p95)}${num(c.noneMs.p50)}${num(c.noneMs.p95)}`),
    ...(f.serve ? [`  serving a ${(f.serve.bytes / 1024 / 1024).toFixed(1)} MiB image: p50 ${f.serve.ms.p50} ms, p95 ${f.serve.ms.p95} ms over ${f.serve.requests} sequential GETs (${f.serve.mbPerS} MiB/s)`] : []),
  ];
}
