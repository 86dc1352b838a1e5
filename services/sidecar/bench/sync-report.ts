/** The "Knowledge-base sync" section of the printed report (figures from sync.ts). */
import type { Spread } from "./stats.js";
import type { OnOff, SyncFigures, WriteToKb } from "./sync.js";

const LABEL = 52;
const num = (n: number, width = 9) => n.toFixed(1).padStart(width);
const row = (label: string, s: Spread) => `    ${label.padEnd(LABEL)}${num(s.p50)}${num(s.p95)}${num(s.max)}${String(s.n).padStart(5)}`;
const signed = (n: number) => `${n >= 0 ? "+" : ""}${n.toFixed(1)}`;

function writeRows(w: WriteToKb): string[] {
  const d = `debounce ${w.debounceMs} ms`.padEnd(17);
  return [
    row(`${d} new file, last step of its turn`, w.newFile),
    row(`${d} edit of a file in the KB, last step`, w.edit),
    row(`${d} new file mid-turn (${w.midTurnTailMs} ms more)`, w.midTurn),
  ];
}

function onOffRow(label: string, x: OnOff): string {
  const pair = (s: Spread) => `${num(s.p50, 8)}${num(s.p95, 8)}`;
  return `    ${label.padEnd(36)}${pair(x.off)}  ${pair(x.on)}${`×${x.ratioP50.toFixed(2)}`.padStart(9)}${signed(x.pairedMs).padStart(10)}`;
}

export function renderSync(s: SyncFigures): string[] {
  const title = "Knowledge-base sync: local-mode sidecar → Open WebUI contract double (in this process)";
  if (s.skipped) return [title, `  skipped (${s.skipped})`];
  if (s.error) return [title, `  FAILED: ${s.error.split("\n")[0]}`];
  const lines = [`${title}; times in ms`];
  if (s.writeToKb?.length) {
    const configured = s.writeToKb[0]!.debounceMs;
    lines.push(
      `  ${"Write → in the user's KB, one write at a time".padEnd(LABEL + 2)}${"p50".padStart(9)}${"p95".padStart(9)}${"max".padStart(9)}${"n".padStart(5)}`,
      ...s.writeToKb.flatMap(writeRows),
      `    From the file's mtime (opencode's write tool) to its content in the KB, polled every ${s.pollMs} ms.`,
      `    Includes the debounce (OPENWEBUI_SYNC_DEBOUNCE_MS=${configured} ms), which holds back changes seen while a`,
      "    turn runs; at the end of a turn the sidecar reconciles and sends what is pending at once, so a",
      "    write that ends its turn waits for the end of the turn, not the whole debounce. Mid-turn",
      "    writes (their turn streams on past the debounce) show the debounce itself; debounce 0, the",
      "    pipeline alone (event → upload → processed → linked).",
    );
  }
  const c = s.chat;
  if (c) {
    lines.push(
      `  Chat with sync on vs off: ${c.iterations} iterations after ${c.warmup} warm-up, alternating; two sidecars,`,
      "  same opencode config; each iteration a new chat: first turn, a write turn, a follow-up",
      `    ${"".padEnd(36)}${"off p50".padStart(8)}${"p95".padStart(8)}  ${"on p50".padStart(8)}${"p95".padStart(8)}${"on/off".padStart(9)}${"paired Δ".padStart(10)}`,
      onOffRow("follow-up → first token", c.followUpTtftMs),
      onOffRow("write turn → first token", c.writeTtftMs),
      onOffRow("write turn → total", c.writeTotalMs),
      `    follow-up: ${c.followUpPrompt}, while that file uploads; target on/off ≈ 1.00`,
      `    sidecar CPU per iteration: off ${c.sidecarCpuMsPerIteration.off.toFixed(1)} ms, on ${c.sidecarCpuMsPerIteration.on.toFixed(1)} ms` +
        `; ${c.synced.inKb}/${c.synced.written} written files reached the KB`,
    );
  }
  return lines;
}
