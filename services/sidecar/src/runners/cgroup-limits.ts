/**
 * Per-user resource limits for local mode, through the kernel's cgroups: a fork bomb or a
 * memory hog in one user's sandbox hits that user's own ceiling (`pids.max`, a memory limit,
 * a CPU quota) and the host, the sidecar and the other users go on. Docker mode gets the same
 * limits from the engine (RUNNER_MEMORY, RUNNER_CPUS, RUNNER_PIDS); here the sidecar makes the
 * cgroups itself, which needs write access to the cgroup tree (root, or a delegated subtree
 * under systemd: `Delegate=yes`).
 *
 * Each user gets one cgroup per controller, below the sidecar's own cgroup so that limits set
 * on the sidecar (a container's, a systemd unit's) still bound everything:
 *   v1: /sys/fs/cgroup/<controller>/<own path>/open-persona-<id>/<user hash>
 *   v2: /sys/fs/cgroup/<own path>/open-persona-<id>/<user hash>
 * `<id>` (`<sidecar pid>-<random>`) is new per runner, so sidecars sharing a host (or a test
 * process) never share one; groups left by a sidecar that died are removed at the next start.
 * The user's process joins its cgroups itself, before it execs anything (bin/tie-to-parent.sh
 * `--cgroup`), so no child is ever forked outside them.
 *
 * cgroup v2 forbids processes in a cgroup whose children have controllers ("no internal
 * processes"): the runner's group `open-persona-<id>` holds no process, only user groups.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

export interface ProcessLimits {
  /** Memory (resident + page cache) of all the user's processes; the kernel OOM-kills inside the group above it. */
  memoryBytes?: number;
  /** Processes and threads (a fork bomb stops here). */
  pids?: number;
  /** CPU time, in cores (1.5 = one and a half cores' worth per period). */
  cpus?: number;
}

/** One user's cgroups, for one process start. */
export interface UserCgroup {
  /** The `cgroup.procs` files the process writes its own pid into before it execs. */
  readonly procsFiles: string[];
  /** Where to read the user's counters (tests, logs). */
  readonly dirs: Record<string, string>;
  /** Removes the (then empty) cgroups; best effort. */
  remove(): void;
}

export interface CgroupLimiter {
  readonly version: 1 | 2;
  /** Creates the user's cgroups with `limits` set; throws when the kernel refuses. */
  forUser(userHash: string, limits: ProcessLimits): UserCgroup;
  /** Removes the runner's own group (after every user's process is gone). */
  close(): void;
}

const CONTROLLERS = ["memory", "pids", "cpu"] as const;
const PREFIX = "open-persona-";
type Controller = (typeof CONTROLLERS)[number];
/** CFS period for the CPU quota (the kernel's default). */
const CPU_PERIOD_US = 100_000;

/**
 * A limiter for this host, or why there can be none (for the boot log). `sysfs` and
 * `selfCgroup` are parameters so the layout logic can be tested on a copy of the tree.
 */
export function detectCgroupLimiter(
  sysfs = "/sys/fs/cgroup",
  selfCgroup = () => fs.readFileSync("/proc/self/cgroup", "utf8"),
): CgroupLimiter | { problem: string } {
  let lines: string[];
  try {
    lines = selfCgroup().trim().split("\n");
  } catch (e) {
    return { problem: `cannot read /proc/self/cgroup: ${(e as Error).message}` };
  }
  const id = `${PREFIX}${process.pid}-${randomBytes(4).toString("hex")}`;
  // v1: one hierarchy per controller, "N:controller[,controller]:/path".
  const v1 = new Map<Controller, string>();
  for (const line of lines) {
    const [, names, own] = line.split(":");
    for (const name of names?.split(",") ?? []) {
      const c = name as Controller;
      if (CONTROLLERS.includes(c) && fs.existsSync(path.join(sysfs, c, "cgroup.procs"))) v1.set(c, path.join(sysfs, c, own ?? "/"));
    }
  }
  try {
    if (v1.has("memory") && v1.has("pids")) return new V1Limiter(v1, id);
    const unified = lines.find((l) => l.startsWith("0::"));
    if (unified && fs.existsSync(path.join(sysfs, "cgroup.controllers"))) return new V2Limiter(path.join(sysfs, unified.slice(3)), id);
  } catch (e) {
    return { problem: `cgroups not writable: ${(e as Error).message}` };
  }
  return { problem: "no cgroup memory and pids controllers found" };
}

class V1Limiter implements CgroupLimiter {
  readonly version = 1;
  private readonly bases = new Map<Controller, string>();

  constructor(own: Map<Controller, string>, id: string) {
    for (const [c, dir] of own) {
      removeStale(dir);
      const base = path.join(dir, id);
      fs.mkdirSync(base);
      this.bases.set(c, base);
    }
  }

  forUser(userHash: string, limits: ProcessLimits): UserCgroup {
    const dirs: Record<string, string> = {};
    for (const [c, base] of this.bases) {
      dirs[c] = path.join(base, userHash);
      fs.mkdirSync(dirs[c], { recursive: true });
    }
    if (limits.memoryBytes) {
      write(dirs.memory!, "memory.limit_in_bytes", limits.memoryBytes);
      // Without swap accounting this file is absent; with it, swap must not extend the limit.
      if (fs.existsSync(path.join(dirs.memory!, "memory.memsw.limit_in_bytes"))) write(dirs.memory!, "memory.memsw.limit_in_bytes", limits.memoryBytes);
    }
    if (limits.pids) write(dirs.pids!, "pids.max", limits.pids);
    if (limits.cpus && dirs.cpu) {
      write(dirs.cpu, "cpu.cfs_period_us", CPU_PERIOD_US);
      write(dirs.cpu, "cpu.cfs_quota_us", Math.round(limits.cpus * CPU_PERIOD_US));
    }
    return userCgroup(dirs);
  }

  close(): void {
    for (const base of this.bases.values()) removeTree(base);
  }
}

class V2Limiter implements CgroupLimiter {
  readonly version = 2;
  private readonly base: string;

  constructor(own: string, id: string) {
    const available = fs.readFileSync(path.join(own, "cgroup.controllers"), "utf8").split(/\s+/);
    const wanted = CONTROLLERS.filter((c) => available.includes(c));
    if (!wanted.includes("memory") || !wanted.includes("pids")) throw new Error(`controllers available to ${own}: ${available.join(" ") || "none"}`);
    removeStale(own);
    this.base = path.join(own, id);
    fs.mkdirSync(this.base);
    // Our own group holds the sidecar, so controllers are enabled one level down, in ours.
    fs.writeFileSync(path.join(this.base, "cgroup.subtree_control"), wanted.map((c) => `+${c}`).join(" "));
  }

  forUser(userHash: string, limits: ProcessLimits): UserCgroup {
    const dir = path.join(this.base, userHash);
    fs.mkdirSync(dir, { recursive: true });
    if (limits.memoryBytes) {
      write(dir, "memory.max", limits.memoryBytes);
      if (fs.existsSync(path.join(dir, "memory.swap.max"))) write(dir, "memory.swap.max", 0);
    }
    if (limits.pids) write(dir, "pids.max", limits.pids);
    if (limits.cpus && fs.existsSync(path.join(dir, "cpu.max"))) write(dir, "cpu.max", `${Math.round(limits.cpus * CPU_PERIOD_US)} ${CPU_PERIOD_US}`);
    return userCgroup({ memory: dir, pids: dir, cpu: dir });
  }

  close(): void {
    removeTree(this.base);
  }
}

function userCgroup(dirs: Record<string, string>): UserCgroup {
  const unique = [...new Set(Object.values(dirs))];
  return {
    procsFiles: unique.map((d) => path.join(d, "cgroup.procs")),
    dirs,
    remove: () => unique.forEach((d) => rmdirSoon(d)),
  };
}

function write(dir: string, file: string, value: number | string): void {
  fs.writeFileSync(path.join(dir, file), String(value));
}

/** Groups of sidecars that are gone (their pid no longer runs). */
function removeStale(parent: string): void {
  let names: string[] = [];
  try {
    names = fs.readdirSync(parent).filter((n) => n.startsWith(PREFIX));
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(/^open-persona-(\d+)-/.exec(name)?.[1]);
    if (pid && !fs.existsSync(`/proc/${pid}`)) removeTree(path.join(parent, name));
  }
}

/**
 * A user's processes may take a few seconds more to go than the process the runner waited
 * for (the tie script's watcher sleeps before its last kill): retry for a while.
 */
function rmdirSoon(dir: string, triesLeft = 15): void {
  try {
    fs.rmdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EBUSY" || triesLeft <= 0) return;
    setTimeout(() => rmdirSoon(dir, triesLeft - 1), 1000).unref();
  }
}

/** cgroup directories are removed with rmdir, deepest first, and only once empty of processes. */
function removeTree(dir: string, triesLeft = 15): void {
  let entries: fs.Dirent[] = [];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return;
  }
  const children = entries.filter((e) => e.isDirectory()).map((e) => path.join(dir, e.name));
  for (const child of children) removeTree(child, 0);
  try {
    fs.rmdirSync(dir);
  } catch (e) {
    // Still busy (see rmdirSoon): once the children are gone, the parent can go too.
    if ((e as NodeJS.ErrnoException).code === "EBUSY" && triesLeft > 0) setTimeout(() => removeTree(dir, triesLeft - 1), 1000).unref();
  }
}
