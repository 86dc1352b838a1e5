/**
 * Resource readings of one process from /proc (Linux only): CPU time and resident memory.
 * Read from outside, so the benchmark client's own work never counts against the sidecar.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";

/** Clock ticks per second, the unit of utime/stime in /proc/<pid>/stat. */
const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** User + system CPU time the process has used so far, in ms (its children not included). */
export function cpuTimeMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  // The command name (field 2) is parenthesised and may hold spaces: count fields after it.
  // From field 3 (state) on, utime and stime are fields 14 and 15, i.e. indexes 11 and 12.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
}

/** Resident set size (VmRSS), in bytes. */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}

export interface RssSampler {
  /** Stops sampling; returns the highest RSS seen (bytes) and how many samples were taken. */
  stop(): { peakBytes: number; samples: number };
}

/** Samples RSS every `everyMs` until stopped (a process that ended stops counting). */
export function sampleRss(pid: number, everyMs = 100): RssSampler {
  let peakBytes = rssBytes(pid);
  let samples = 1;
  const timer = setInterval(() => {
    try {
      peakBytes = Math.max(peakBytes, rssBytes(pid));
      samples++;
    } catch {
      clearInterval(timer);
    }
  }, everyMs);
  return {
    stop() {
      clearInterval(timer);
      try {
        peakBytes = Math.max(peakBytes, rssBytes(pid));
        samples++;
      } catch {
        /* process gone: keep what was seen */
      }
      return { peakBytes, samples };
    },
  };
}

/**
 * Proportional set size (Pss in smaps_rollup), bytes: pages shared with other processes (the
 * opencode binary's text, shared libraries) count in part. Summed over N processes it is what
 * they hold together, where N × VmRSS would count the shared pages N times.
 */
export function pssBytes(pid: number): number {
  const m = /^Pss:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
  return m ? Number(m[1]) * 1024 : 0;
}
