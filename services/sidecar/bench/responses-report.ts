/** The "Responses API vs Chat Completions" section of the printed report (figures from responses.ts). */
import type { ApiFigures, ResponsesFigures } from "./responses.js";

export function renderResponses(f: ResponsesFigures): string[] {
  const title = "Responses API vs Chat Completions: the same scripted reply, same sidecar, both streamed";
  if (f.skipped) return [title, `  skipped (${f.skipped})`];
  if (f.error || !f.chat || !f.responses || !f.added) return [title, `  FAILED: ${(f.error ?? "no figures").split("\n")[0]}`];
  const num = (n: number, w = 9) => n.toFixed(2).padStart(w);
  const row = (label: string, a: ApiFigures) =>
    `  ${label.padEnd(20)}${num(a.firstTtftMs.p50)}${num(a.ttftMs.p50)}${num(a.ttftMs.p95)}${num(a.gapMs.p50)}${num(a.gapMs.p95)}${num(a.meanGapMs.p50)}${num(a.totalMs.p50)}${String(a.chunksP50).padStart(8)}`;
  const signed = (n: number) => `${n >= 0 ? "+" : ""}${n.toFixed(2)} ms`;
  const a = f.added;
  return [
    `${title}; ${f.iterations} iterations; ${f.prompt}; times in ms`,
    `  ${"".padEnd(20)}${"1st TTFT".padStart(9)}${"TTFT p50".padStart(9)}${"p95".padStart(9)}${"gap p50".padStart(9)}${"p95".padStart(9)}${"mean gap".padStart(9)}${"total".padStart(9)}${"chunks".padStart(8)}`,
    row("chat/completions", f.chat),
    row("responses", f.responses),
    `  responses − chat: first-turn TTFT ${signed(a.firstTtftMs)}, follow-up TTFT ${signed(a.ttftMs)} (paired median ${signed(a.pairedTtftMs)}),`,
    `    mean gap between deltas ${signed(a.meanGapMs)} (paired median ${signed(a.pairedMeanGapMs)}), total ${signed(a.totalMs)} (${signed(a.perChunkMs)} per chunk)`,
    "  (1st TTFT: a new chat's first turn; the rest: the streamed follow-up. Single gaps are mostly ~0: opencode passes text on in bursts.)",
  ];
}
