/**
 * The cgroup layout and limit files, on a copy of the tree's shape (v1 and v2), so that both
 * layouts are checked whatever this machine runs. The real kernel is exercised by
 * e2e/sandbox.test.ts (a fork bomb and a memory hog held by these limits).
 */
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { detectCgroupLimiter, type CgroupLimiter } from "../../src/runners/cgroup-limits.js";
import { tempDir } from "../helpers/harness.js";

const read = (...p: string[]) => fs.readFileSync(path.join(...p), "utf8");

function limiter(found: ReturnType<typeof detectCgroupLimiter>): CgroupLimiter {
  if ("problem" in found) throw new Error(found.problem);
  return found;
}

describe("cgroup v1", () => {
  const sysfs = tempDir("op-cg1-");
  for (const c of ["memory", "pids", "cpu"]) {
    fs.mkdirSync(path.join(sysfs, c, "svc"), { recursive: true });
    fs.writeFileSync(path.join(sysfs, c, "cgroup.procs"), "");
  }
  const self = "12:pids:/svc\n11:memory:/svc\n10:cpu,cpuacct:/svc\n0::/\n";

  it("removes the groups of sidecars that are gone, and only those", () => {
    const stale = path.join(sysfs, "pids", "svc", "open-persona-999999999-deadbeef");
    const live = path.join(sysfs, "pids", "svc", `open-persona-${process.pid}-cafecafe`);
    fs.mkdirSync(stale);
    fs.mkdirSync(live);
    limiter(detectCgroupLimiter(sysfs, () => self));
    expect(fs.existsSync(stale)).toBe(false);
    expect(fs.existsSync(live)).toBe(true);
  });

  it("makes one group per user below the sidecar's own, with memory, pids and CPU limits", () => {
    const l = limiter(detectCgroupLimiter(sysfs, () => self));
    expect(l.version).toBe(1);
    const user = l.forUser("abc123", { memoryBytes: 2 ** 30, pids: 300, cpus: 1.5 });
    expect(user.dirs.pids).toMatch(new RegExp(`^${sysfs}/pids/svc/open-persona-${process.pid}-[0-9a-f]{8}/abc123$`));
    expect(read(user.dirs.memory!, "memory.limit_in_bytes")).toBe(String(2 ** 30));
    expect(read(user.dirs.pids!, "pids.max")).toBe("300");
    expect(read(user.dirs.cpu!, "cpu.cfs_quota_us")).toBe("150000");
    expect(user.procsFiles).toHaveLength(3);
    // Two limiters (two sidecars on one host) never share a group.
    const other = limiter(detectCgroupLimiter(sysfs, () => self)).forUser("abc123", { pids: 10 });
    expect(other.dirs.pids).not.toBe(user.dirs.pids);
  });
});

describe("cgroup v2", () => {
  const sysfs = tempDir("op-cg2-");
  fs.mkdirSync(path.join(sysfs, "svc"), { recursive: true });
  fs.writeFileSync(path.join(sysfs, "cgroup.controllers"), "cpuset cpu io memory pids");
  fs.writeFileSync(path.join(sysfs, "svc", "cgroup.controllers"), "cpu memory pids");

  it("enables the controllers in its own group, which holds no process, and limits each user", () => {
    const l = limiter(detectCgroupLimiter(sysfs, () => "0::/svc\n"));
    expect(l.version).toBe(2);
    const user = l.forUser("u1", { memoryBytes: 2 ** 30, pids: 64 });
    const base = path.dirname(user.dirs.pids!);
    expect(read(base, "cgroup.subtree_control")).toBe("+memory +pids +cpu");
    expect(read(user.dirs.memory!, "memory.max")).toBe(String(2 ** 30));
    expect(read(user.dirs.pids!, "pids.max")).toBe("64");
    expect(user.procsFiles).toEqual([path.join(base, "u1", "cgroup.procs")]);
  });

  it("says why when the memory or pids controller is not delegated", () => {
    fs.writeFileSync(path.join(sysfs, "svc", "cgroup.controllers"), "cpu");
    const found = detectCgroupLimiter(sysfs, () => "0::/svc\n");
    expect(found).toEqual({ problem: expect.stringContaining("controllers available") });
  });
});
