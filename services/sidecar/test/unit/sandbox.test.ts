import fs from "node:fs";
import { describe, expect, it } from "vitest";
import { bwrapArgs } from "../../src/runners/sandbox.js";

const mounts = { workspaceDir: "/srv/ws/aaaa", dataDir: "/srv/state/users/aaaa/opencode", binary: "/opt/oc/bin/opencode" };

/** The mount pairs of one kind (`--bind`, `--ro-bind`, …) as "src→dest". */
function mountsOf(args: string[], flag: string): string[] {
  const out: string[] = [];
  args.forEach((a, i) => {
    if (a === flag) out.push(`${args[i + 1]}→${args[i + 2]}`);
  });
  return out;
}

describe("bwrapArgs", () => {
  const args = bwrapArgs(mounts);

  it("writes only to the user's own workspace and opencode data, at the same paths", () => {
    expect(mountsOf(args, "--bind").sort()).toEqual([`${mounts.dataDir}→${mounts.dataDir}`, `${mounts.workspaceDir}→${mounts.workspaceDir}`].sort());
    expect(args.slice(args.indexOf("--chdir"), args.indexOf("--chdir") + 2)).toEqual(["--chdir", mounts.workspaceDir]);
  });

  it("mounts the binary's directory read-only, and nothing else of the sidecar's state", () => {
    const ro = mountsOf(args, "--ro-bind");
    expect(ro).toContain("/opt/oc/bin→/opt/oc/bin");
    expect(ro.filter((m) => m.startsWith("/srv/"))).toEqual([]);
    // /etc only file by file: no /etc as a whole, no / as a whole.
    expect(ro.some((m) => m.startsWith("/etc→") || m.startsWith("/→"))).toBe(false);
  });

  it("gets fresh namespaces, no capabilities, a private /tmp and its own /proc", () => {
    for (const flag of ["--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent", "--new-session"]) expect(args).toContain(flag);
    expect(args.join(" ")).toContain("--cap-drop ALL");
    expect(args.join(" ")).toContain("--proc /proc");
    expect(args.join(" ")).toContain("--tmpfs /tmp");
    // The host network stays (the sidecar reaches the server, the server the model).
    expect(args).not.toContain("--unshare-net");
  });

  it("keeps merged-usr links as links", () => {
    const fake = (p: string) => ({ isSymbolicLink: () => p === "/bin" }) as fs.Stats;
    const real = fs.readlinkSync;
    (fs as { readlinkSync: unknown }).readlinkSync = () => "usr/bin";
    try {
      const a = bwrapArgs(mounts, (p) => (["/usr", "/bin"].includes(p) ? fake(p) : undefined));
      expect(a.join(" ")).toContain("--symlink usr/bin /bin");
      expect(a.join(" ")).toContain("--ro-bind /usr /usr");
    } finally {
      (fs as { readlinkSync: unknown }).readlinkSync = real;
    }
  });
});
