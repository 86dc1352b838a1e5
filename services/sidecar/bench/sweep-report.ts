/** The "Concurrency sweep" section of the printed report (figures from sweep.ts). */
import type { SweepFigures, SweepRow } from "./sweep.js";

const num = (n: number | undefined, width: number, digits = 0) => (n === undefined ? "—" : n.toFixed(digits)).padStart(width);

const COLUMNS: Array<[string, number]> = [
  ["N", 5],
  ["path", 9],
  ["procs", 6],
  ["turns", 6],
  ["TTFT p50", 9],
  ["p95", 7],
  ["gap p50", 8],
  ["p95", 6],
  ["total p50", 10],
  ["p95", 7],
  ["wall", 7],
  ["sidecar CPU", 12],
  ["opencode CPU", 13],
  ["errors", 7],
];

function row(r: SweepRow, first: boolean): string {
  const cells = [
    first ? String(r.n) : "",
    r.path,
    String(r.processes),
    String(r.turns),
    num(r.ttftMs.p50, 0),
    num(r.ttftMs.p95, 0),
    num(r.gapMs.p50, 0, 1),
    num(r.gapMs.p95, 0, 1),
    num(r.totalMs.p50, 0),
    num(r.totalMs.p95, 0),
    num(r.wallMs, 0),
    r.sidecarCores === undefined ? "—" : r.sidecarCores.toFixed(2),
    r.opencodeCores.toFixed(2),
    String(r.errors),
  ];
  return "  " + cells.map((c, i) => (i === 1 ? `  ${c.padEnd(COLUMNS[i]![1] - 2)}` : c.padStart(COLUMNS[i]![1]))).join("");
}

export function renderSweep(s: SweepFigures): string[] {
  const title = `Concurrency sweep: N concurrent streaming chats, ${s.prompt} (the model sends a piece every ${s.delayMs} ms)`;
  if (s.skipped) return [title, `  skipped (${s.skipped})`];
  const lines = [
    `${title}; times in ms, CPU in cores (CPU time / wall time)`,
    "  sidecar: local mode, N users with one chat each = N opencode processes (procs: fewer when not all fit in memory);",
    "  direct: one opencode, N chats in N directories (one process for all, as local mode was before per-user processes)",
    "  " + COLUMNS.map(([h, w], i) => (i === 1 ? `  ${h.padEnd(w - 2)}` : h.padStart(w))).join(""),
  ];
  let last = -1;
  for (const r of s.rows) {
    lines.push(row(r, r.n !== last));
    last = r.n;
  }
  for (const p of s.fewerUsers) lines.push(`  N=${p.n}: the sidecar's ${p.n} chats ran over ${p.users} users (${p.users} processes): ${p.why}`);
  for (const p of s.skippedPoints) lines.push(`  N=${p.n} not measured: ${p.why}`);
  for (const r of s.rows) if (r.errorMessages.length) lines.push(`  N=${r.n} ${r.path} errors: ${r.errorMessages.join("; ")}`);
  if (s.error) lines.push(`  FAILED after the rows above: ${s.error.split("\n")[0]}`);
  const m = s.memory;
  if (m.idleUserRssMiB && m.idleUserPssMiB) {
    lines.push(
      `  memory per idle user (local mode): one opencode after its first prompt, VmRSS p50 ${m.idleUserRssMiB.p50.toFixed(0)} MiB (max ${m.idleUserRssMiB.max.toFixed(0)}), ` +
        `PSS p50 ${m.idleUserPssMiB.p50.toFixed(0)} MiB (max ${m.idleUserPssMiB.max.toFixed(0)}; PSS splits the shared binary's pages), n=${m.idleUserRssMiB.n}`,
    );
  }
  if (m.atN !== undefined) {
    lines.push(
      `  idle after N=${m.atN}: the sidecar's ${m.sidecarProcesses} opencode processes hold ${m.sidecarPssSumMiB?.toFixed(0)} MiB (PSS sum); ` +
        `the direct opencode ${m.directRssMiB?.toFixed(0)} MiB VmRSS (${m.directPssMiB?.toFixed(0)} MiB PSS)`,
    );
  }
  return lines;
}
