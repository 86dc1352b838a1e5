/** The "Isolation" section of the printed report (figures from isolation.ts): one column per mode. */
import { ISOLATION_MODES, spreadOf, type Isolation, type StartFigures, type UserFigures } from "./isolation.js";
import type { Spread } from "./stats.js";

const LABEL = 50;
const COLUMN = 18;
const HEADINGS: Record<(typeof ISOLATION_MODES)[number], string> = { sandboxed: "local + bwrap", unsandboxed: "local, no sandbox", docker: "docker" };

/** "p50 / max" (3 users: the worst one says more than a p95 would). */
function cell(s: Spread | undefined, scale = 1): string {
  if (!s) return "n/a".padStart(COLUMN);
  const f = (n: number) => (n / scale).toFixed(scale === 1 ? 0 : 1);
  return `${f(s.p50)} / ${f(s.max)}`.padStart(COLUMN);
}

type Pick = (u: UserFigures) => number | undefined;
const fromStart = (which: "cold" | "restart", pick: (s: StartFigures) => number | undefined): Pick => (u) => (u[which] ? pick(u[which]) : undefined);

export function renderIsolation(r: Isolation): string[] {
  const title = `Isolation: one user's runner per mode (${r.users} users each, started one at a time); p50 / max over users`;
  if (r.off) return [title, `  skipped (${r.off})`];
  if (r.error) return [title, `  FAILED: ${r.error.split("\n")[0]}`];
  const modes = ISOLATION_MODES.filter((m) => r.modes[m]);
  const row = (label: string, pick: Pick, scale = 1) => `  ${label.padEnd(LABEL)}${modes.map((m) => cell(spreadOf(r.modes[m], pick), scale)).join("")}`;
  const count = (label: string, pick: (u: UserFigures) => boolean | undefined) =>
    `  ${label.padEnd(LABEL)}${modes
      .map((m) => {
        const known = (r.modes[m]?.users ?? []).map(pick).filter((x) => x !== undefined);
        return (known.length ? `${known.filter(Boolean).length} of ${known.length}` : "n/a").padStart(COLUMN);
      })
      .join("")}`;
  const section = (label: string) => `  ${label}`;
  const lines = [
    title,
    `  ${"".padEnd(LABEL)}${modes.map((m) => HEADINGS[m].padStart(COLUMN)).join("")}`,
    section("Cold start (a new user's first request; no runner yet), ms"),
    row("  request → first token", fromStart("cold", (s) => s.ttftMs)),
    row("  request → runner healthy (log; local only)", fromStart("cold", (s) => s.readyMs)),
    row("  request → session created (log)", fromStart("cold", (s) => s.sessionMs)),
    section("Runner CPU, s"),
    row("  spawn → end of the first turn", fromStart("cold", (s) => s.turnCpuMs), 1000),
    row("  after it, in the background, until quiet", fromStart("cold", (s) => s.backgroundCpuMs), 1000),
    row("  busy for (wall clock)", fromStart("cold", (s) => s.busyMs), 1000),
    count("  plugin package installed by this start", (u) => u.cold.installedPlugin),
    row("  request → plugin install done, s", fromStart("cold", (s) => s.pluginInstalledMs), 1000),
    section("Warm (the runner up), ms"),
    row("  2nd request (same chat) → first token", (u) => u.secondRequestTtftMs),
    row("  new chat → first token", (u) => u.newChatTtftMs),
    section("Memory per user, MiB"),
    row("  PSS of the runner's processes, after 1st turn", (u) => u.afterFirstTurn.pssMiB),
    row(`  PSS, all users up, idle ≥ ${r.idleMs / 1000} s`, (u) => u.idle.pssMiB),
    row("  RSS summed over those processes, idle", (u) => u.idle.rssMiB),
    row("  container working set (docker stats), idle", (u) => u.idle.workingSetMiB),
    row("  processes in the runner", (u) => u.idle.processes),
    section("Restart (runner stopped, data and config dir kept): next request"),
    row("  request → first token, ms", fromStart("restart", (s) => s.ttftMs)),
    row("  request → runner healthy, ms (log; local only)", fromStart("restart", (s) => s.readyMs)),
    row("  runner CPU to the end of the turn, s", fromStart("restart", (s) => s.turnCpuMs), 1000),
    row("  runner CPU after it, until quiet, s", fromStart("restart", (s) => s.backgroundCpuMs), 1000),
    count("  plugin package installed by this start", (u) => u.restart?.installedPlugin),
  ];
  for (const m of ISOLATION_MODES) {
    if (r.skipped[m]) lines.push(`  ${m} not measured: ${r.skipped[m]}`);
    const error = r.modes[m]?.error;
    if (error) lines.push(`  ${m} FAILED: ${error.split("\n")[0]}`);
  }
  lines.push(
    "  local: the user's spawned process and all below it (tie script, bwrap, opencode); docker: the container's processes,",
    "  read from the host; CPU is cgroup time for docker. PSS splits pages shared with other processes (e.g. the opencode",
    "  binary, mapped by every local runner on the host) among them.",
  );
  return lines;
}
