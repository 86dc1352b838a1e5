/** The "Swarm" section of the printed report, as markdown tables (figures from swarm.ts). */
import type { Spread } from "./stats.js";
import { LOAD_DELAY_MS, LOAD_TOKENS, type StartFigures, type SwarmFigures } from "./swarm.js";

const ms = (n: number | undefined, digits = 0) => (n !== undefined && Number.isFinite(n) ? n.toFixed(digits) : "n/a");
const row = (cells: Array<string | number>) => `| ${cells.join(" | ")} |`;
const table = (head: string[], rows: Array<Array<string | number>>) => [row(head), row(head.map(() => "---")), ...rows.map(row)];
const p = (s: Spread | undefined) => (s ? `${ms(s.p50)} / ${ms(s.p95)}` : "n/a");

function startRow(name: string, f: StartFigures | undefined): Array<string | number> {
  if (!f) return [name, "n/a", "n/a", "n/a", "n/a", 0];
  return [name, p(f.createdMs), p(f.runningMs), p(f.readyMs), p(f.firstTokenMs), f.n];
}

export function renderSwarm(f: SwarmFigures): string[] {
  const title = "## Swarm: runner services (RUNNER_MODE=swarm) on this machine's swarm";
  if (f.skipped) return [title, `skipped (${f.skipped})`];
  const lines = [title];
  if (f.error) lines.push(`FAILED: ${f.error.split("\n")[0]}`);
  const m = f.machine;
  if (m) {
    const busy = m.loadBefore[0]! > m.cpus / 2 ? " — the machine was busy: expect noisy numbers" : "";
    lines.push(
      `node ${m.node}, Docker ${m.engine ?? "?"} (${m.nodes ?? "?"} swarm node(s); runners pinned to the manager), ${m.cpus} CPUs; load average (1/5/15 min) before ${m.loadBefore.join(" / ")}${m.loadAfter ? `, after ${m.loadAfter.join(" / ")}` : ""}${busy}`,
    );
  }
  const s = f.starts;
  if (s) {
    lines.push(
      "",
      `### Starts, in process (${f.users} users per mode, one at a time, modes alternating); ms from ensure(), p50 / p95`,
      "",
      ...table(
        ["start", "service (container) exists", "task (container) running", "ensure() returned: healthy, events open", "first token", "n"],
        [
          startRow("swarm cold: service create → first token (new session)", s.swarmCold),
          startRow("swarm warm from zero: scale 0 → 1 → first token (same session)", s.swarmWarm),
          startRow("docker cold: container create → first token (new session)", s.dockerCold),
          startRow("docker warm from stopped: container start → first token (same session)", s.dockerWarm),
        ],
      ),
      "",
      "Swarm requests go through the overlay forwarder here (the sidecar process runs on the host); a warm start's service already exists, so its first column is ~0.",
    );
  }
  const l = f.load;
  if (l) {
    lines.push(
      "",
      `### Load through a sidecar container on the overlay network: ${f.loadUsers} users × ${f.chatsPerUser} chats, streamed, say.slow(${LOAD_TOKENS}, ${LOAD_DELAY_MS}); ms`,
      "",
      `${f.loadUsers} users' first requests at once (their services start together): wall ${ms(l.startWallMs)} ms, each p50 / p95 ${p(l.startTtftMs)} ms, errors ${l.startErrors}; sidecar idle working set ${ms(l.sidecarIdleMiB, 1)} MiB`,
      "",
      ...table(
        ["round", "streams", "TTFT p50", "TTFT p95", "total p50", "total p95", "wall", "errors", "sidecar peak MiB", "runner MiB after, p50 / max", "runners total MiB", "CPU ms: sidecar / runners"],
        l.rounds.map((r) => [
          r.name,
          r.streams,
          ms(r.ttftMs?.p50),
          ms(r.ttftMs?.p95),
          ms(r.totalMs?.p50),
          ms(r.totalMs?.p95),
          r.wallMs,
          r.errors,
          ms(r.sidecarPeakMiB, 1),
          r.runnersAfterMiB ? `${ms(r.runnersAfterMiB.p50, 1)} / ${ms(r.runnersAfterMiB.max, 1)}` : "n/a",
          ms(r.runnersTotalAfterMiB, 1),
          `${ms(r.sidecarCpuMs)} / ${ms(r.runnersCpuMs)}`,
        ]),
      ),
    );
    for (const r of l.rounds) if (r.errorMessages.length) lines.push(`${r.name}: ${r.errorMessages.join("; ")}`);
  }
  if (f.notes.length) lines.push("", "Notes:", ...f.notes.map((n) => `- ${n}`));
  return lines;
}
