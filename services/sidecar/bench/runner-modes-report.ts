/** The "Runner modes" section of the printed report (figures from runner-modes.ts). */
import type { AfterFirstTurn, MemoryFigures, RunnerModes, Spread } from "./runner-modes.js";

const LABEL = 46;
const num = (n: number, width = 9) => n.toFixed(1).padStart(width);

/** Cold starts are few (BENCH_COLD_USERS): the worst one says more than a p95 would. */
const coldRow = (label: string, s: Spread) => `    ${label.padEnd(LABEL)}${num(s.p50)}${num(s.max)}${String(s.n).padStart(5)}`;
const warmRow = (label: string, s: Spread) => `    ${label.padEnd(LABEL)}${num(s.p50)}${num(s.p95)}${String(s.n).padStart(5)}`;
const header = (title: string, second: string) => `  ${title.padEnd(LABEL + 2)}${"p50".padStart(9)}${second.padStart(9)}${"n".padStart(5)}`;
/** "p50 / max" in a fixed width, or n/a. */
const pair = (s?: Spread, width = 7) => (s ? `${num(s.p50, width)} /${num(s.max, width)}` : "n/a".padStart(2 * width + 2));

function memoryRow(label: string, m: MemoryFigures): string {
  if (m.note) return `    ${label.padEnd(LABEL)}${m.note}`;
  return `    ${label.padEnd(LABEL)}${pair(m.afterFirstPromptMiB)}  ${pair(m.peakMiB)}  ${pair(m.idleMiB)}`;
}

function busyRow(label: string, a: AfterFirstTurn): string {
  const s = (x: Spread): Spread => ({ ...x, p50: x.p50 / 1000, max: x.max / 1000 });
  const timedOut = a.timedOut ? `  (${a.timedOut} never went quiet within 60 s)` : "";
  return `    ${label.padEnd(LABEL)}${pair(s(a.busyMs))}  ${pair(s(a.cpuMs))}${timedOut}`;
}

export function renderRunnerModes(r: RunnerModes): string[] {
  const title = "Runner modes: docker (one opencode container per user) vs local (one opencode process per user)";
  if (r.skipped) return [title, `  skipped (${r.skipped})`];
  if (r.error) return [title, `  FAILED: ${r.error.split("\n")[0]}`];
  const { local, docker } = r;
  if (!local) return [title, "  no figures"];
  const sub = (title: string, columns: string) => `  ${title.padEnd(LABEL + 2)}${columns}`;

  const lines = [`${title}; times in ms`];
  if (!docker) lines.push(`  docker not measured: ${r.dockerSkipped}`);
  lines.push(header(`Cold start (${r.coldUsers} per mode, each alone)`, "max"));
  if (docker) lines.push(coldRow("docker  new user, no container → first token", docker.coldTtftMs));
  lines.push(
    coldRow("local   sidecar spawn → first token", local.coldSpawnToFirstTokenMs),
    coldRow("local     spawn → /readyz", local.coldSpawnToReadyMs),
    coldRow("local     request after /readyz → first token", local.coldRequestTtftMs),
    coldRow("local   new user, sidecar up → first token", local.newUserTtftMs),
    header(`Warm: an existing user's runner (${r.warmIterations} each)`, "p95"),
  );
  const warmLines: Array<[string, Spread | undefined]> = [
    ["docker  new chat → first token", docker?.warm.newChatTtftMs],
    ["local   new chat → first token", local.warm.newChatTtftMs],
    ["docker  same chat, follow-up → first token", docker?.warm.sameChatTtftMs],
    ["local   same chat, follow-up → first token", local.warm.sameChatTtftMs],
  ];
  for (const [label, s] of warmLines) if (s) lines.push(warmRow(label, s));
  lines.push(sub("Work after the first turn, until quiet", "  busy s p50 / max    CPU s p50 / max"));
  if (docker) lines.push(busyRow("docker  container", docker.afterFirstTurn));
  lines.push(
    busyRow("local   opencode process", local.afterFirstTurn),
    sub(`Memory per runner, MiB (p50 / max)`, `after 1st turn      peak (busy)    idle ≥ ${r.idleMs / 1000} s`),
  );
  if (docker) lines.push(memoryRow("docker  container working set", docker.memory));
  lines.push(memoryRow("local   user's opencode VmRSS", local.memory));
  if (docker) {
    lines.push(
      `  docker: ${docker.memory.measure}`,
      `  docker: engine ${docker.engine}, image ${docker.image}, runner limits: memory ${docker.limits.memory}, CPUs ${docker.limits.cpus}`,
    );
  }
  lines.push(`  local: ${local.memory.measure}`);
  return lines;
}
