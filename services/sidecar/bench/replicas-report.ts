/** The "Replicas" section of the printed report, as markdown tables (figures from replicas.ts). */
import { LOAD_DELAY_MS, LOAD_TOKENS, type OpFigures, type ReplicasFigures, type Spread3 } from "./replicas.js";

const ms = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : "n/a");
const row = (cells: Array<string | number>) => `| ${cells.join(" | ")} |`;
const table = (head: string[], rows: Array<Array<string | number>>) => [row(head), row(head.map(() => "---")), ...rows.map(row)];
const signed = (n: number, digits = 3) => `${n >= 0 ? "+" : ""}${n.toFixed(digits)}`;

function opRows(ops: OpFigures[]): Array<Array<string | number>> {
  const µ = (s: Spread3) => [ms(s.p50, 3), ms(s.p95, 3)];
  return ops.map((o) => [o.op, o.when, ...µ(o.files), ...µ(o.postgres), signed(o.postgres.p50 - o.files.p50)]);
}

export function renderReplicas(f: ReplicasFigures): string[] {
  const title = "## Replicas: state in PostgreSQL vs files (shared opencode)";
  if (f.skipped) return [title, `skipped (${f.skipped})`];
  const lines = [title];
  if (f.error) lines.push(`FAILED: ${f.error.split("\n")[0]}`);
  const m = f.machine;
  if (m) {
    const busy = m.loadBefore[0]! > m.cpus / 2 ? " — the machine was busy: expect noisy numbers" : "";
    lines.push(
      `node ${m.node}, opencode ${m.opencode ?? "?"}, PostgreSQL ${m.postgres ?? "?"}, ${m.cpus} CPUs; load average (1/5/15 min) before ${m.loadBefore.join(" / ")}${m.loadAfter ? `, after ${m.loadAfter.join(" / ")}` : ""}${busy}`,
    );
  }
  if (f.load?.length) {
    const l0 = f.load[0]!;
    lines.push(
      "",
      `### Load: ${l0.streams} concurrent streamed chat completions over ${l0.users} users (2 chats each), follow-up turns, say.slow(${LOAD_TOKENS}, ${LOAD_DELAY_MS}); ${l0.rounds} rounds per backend, alternating; times in ms`,
      "",
      ...table(
        ["backend", "replicas", "turns", "TTFT p50", "TTFT p95", "TTFT max", "total p50", "total p95", "wall per round", "errors", "requests per replica"],
        f.load.map((l) => [
          l.backend,
          l.replicas,
          l.ttftMs.n + l.errors,
          ms(l.ttftMs.p50),
          ms(l.ttftMs.p95),
          ms(l.ttftMs.max),
          ms(l.totalMs.p50),
          ms(l.totalMs.p95),
          l.wallMs.join(", "),
          l.errors,
          l.requestsPerReplica.join(" / "),
        ]),
      ),
      "",
      ...table(
        ["backend", "round start → the model got the turn's prompt (from opencode) p50", "p95", "max"],
        f.load.map((l) => [l.backend, ms(l.modelReceivedMs.p50), ms(l.modelReceivedMs.p95), ms(l.modelReceivedMs.max)]),
      ),
      "",
      ...table(
        ["backend", "peak VmRSS per replica, MiB", "opencode peak VmRSS, MiB", "CPU per replica, ms", "opencode CPU, ms", "load avg at round start"],
        f.load.map((l) => [l.backend, l.peakRssMiB.replicas.join(" / "), l.peakRssMiB.opencode, l.cpuMs.replicas.join(" / "), l.cpuMs.opencode, l.loadAtStart.join(", ")]),
      ),
    );
    for (const l of f.load) {
      if (l.peakDbConnections) lines.push("", `${l.backend}: most sidecar connections on the database at once, per round: ${l.peakDbConnections.join(", ")} (pool max 100 per replica)`);
      if (l.errorMessages.length) lines.push("", `${l.backend} errors: ${l.errorMessages.join("; ")}; failed ${l.errorAtMs.join(", ")} ms after the request`);
    }
  }
  for (const micro of f.micro ?? []) {
    const what = micro.mode === "sequential" ? "one turn at a time" : `${micro.concurrency} concurrent turns (one per user)`;
    lines.push(
      "",
      `### In process: the shared-state calls of a turn, ${what}; ${micro.ops[0]!.files.n} per backend; times in ms`,
      "",
      ...table(["call", "when", "files p50", "files p95", "postgres p50", "postgres p95", "added p50"], [...opRows(micro.ops), ...opRows(micro.totals).map((r) => r.map((c, i) => (i === 0 ? `**${c}**` : c)))]),
    );
  }
  if (f.e2e) {
    const e = f.e2e;
    lines.push(
      "",
      `### End to end: first token of a follow-up message, one replica called directly; ${e.pairs} alternating pairs; ${e.prompt}; times in ms`,
      "",
      ...table(
        ["backend", "TTFT p50", "TTFT p95", "TTFT max"],
        [
          ["files", ms(e.files.p50, 2), ms(e.files.p95, 2), ms(e.files.max, 2)],
          ["postgres", ms(e.postgres.p50, 2), ms(e.postgres.p95, 2), ms(e.postgres.max, 2)],
        ],
      ),
      "",
      `added by PostgreSQL: p50 ${signed(e.addedP50Ms, 2)} ms, paired median ${signed(e.pairedMedianMs, 2)} ms`,
    );
  }
  if (f.target?.length) {
    lines.push("", "### Target: what the database adds to a turn's first token", "");
    lines.push(...table(["", "measure", "added, ms", "target"], f.target.map((t) => [t.pass ? "PASS" : "MISS", t.name, signed(t.valueMs), `< ${t.targetMs} ms`])));
  }
  if (f.notes.length) lines.push("", ...f.notes.map((n) => `note: ${n}`));
  return lines;
}
