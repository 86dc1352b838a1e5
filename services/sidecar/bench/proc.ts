/**
 * Resource readings of one process from /proc (Linux only): CPU time and resident memory.
 * Read from outside, so the benchmark client's own work never counts against the sidecar.
 */
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import { descendants } from "../test/helpers/harness.js";

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

/**
 * CPU time of the process plus what its reaped children used (cutime + cstime), in ms: summed
 * over a live process tree, every process that ever ran in it counts once (short-lived helpers,
 * such as the package install opencode runs, included).
 */
function cpuWithReapedMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  // utime, stime, cutime, cstime: fields 14–17, indexes 11–14 after the command name.
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * 1000) / CLK_TCK;
}

/** One reading of a process and all its descendants. */
export interface TreeReading {
  pids: number[];
  /** CPU used so far by the tree, reaped children included, ms. */
  cpuMs: number;
  /** Summed Pss: what the tree holds, its share of pages shared with other processes counted in part. */
  pssBytes: number;
  /** Summed VmRSS (counts shared pages once per process: an upper bound). */
  rssBytes: number;
}

/** Reads `root` and its descendants; processes that end meanwhile are skipped. */
export function treeReading(root: number): TreeReading {
  const reading: TreeReading = { pids: [], cpuMs: 0, pssBytes: 0, rssBytes: 0 };
  for (const pid of [root, ...descendants(root)]) {
    try {
      const cpu = cpuWithReapedMs(pid);
      const pss = pssBytes(pid);
      const rss = rssBytes(pid);
      reading.pids.push(pid);
      reading.cpuMs += cpu;
      reading.pssBytes += pss;
      reading.rssBytes += rss;
    } catch {
      /* ended while we looked */
    }
  }
  return reading;
}
