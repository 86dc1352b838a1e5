/**
 * A bubblewrap (`bwrap`) sandbox around one user's opencode in local mode: unprivileged user
 * namespaces, no daemon, no root. Inside, the agent sees
 * - its own workspace read-write, at the same absolute path as outside (paths in sessions
 *   stay valid), and its own opencode directory (data, config, state, cache, home);
 * - the opencode binary, read-only;
 * - the system directories (/usr and the merged-usr links, a few files of /etc), read-only;
 * - a private /tmp, /proc of its own pid namespace (no other process, the sidecar's least
 *   of all), a minimal /dev, fresh ipc/uts namespaces, all capabilities dropped;
 * and nothing else: not STATE_ROOT (session maps, keys, the runner secret), no other
 * workspace, no other user's opencode data.
 *
 * The network is the host's, so that the sidecar reaches the server and the server reaches
 * the model. Another user's opencode server is reachable on loopback but guarded by its own
 * random password, which lives only in that sandbox's environment (its /proc is invisible
 * here); the sidecar is reachable but answers only to its keys.
 *
 * The environment is the one the process is spawned with (never argv: argv is visible to
 * every process on the host).
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

export interface SandboxMounts {
  /** The user's workspace (read-write). */
  workspaceDir: string;
  /**
   * The user's opencode directory (XDG data/config/state/cache/home; read-write). Its config
   * dir is the user's own: opencode writes to it at start, and a shared writable one would
   * let one user's agent plant a plugin that runs in everyone's opencode.
   */
  dataDir: string;
  /** The opencode binary: its directory is mounted read-only. */
  binary: string;
}

/** The uid and gid the agent has inside (mapped to the sidecar's own user outside). */
const SANDBOX_ID = "1000";

/** System paths, mounted read-only when they exist (symlinks, as merged-usr has, are kept as links). */
const SYSTEM_PATHS = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"];
/** What programs need from /etc: name resolution, TLS roots, time zone, users. Nothing else. */
const ETC_PATHS = [
  "/etc/resolv.conf",
  "/etc/hosts",
  "/etc/nsswitch.conf",
  "/etc/ssl",
  "/etc/ca-certificates",
  "/etc/localtime",
  "/etc/passwd",
  "/etc/group",
  "/etc/alternatives",
  "/etc/gitconfig",
];

/** bwrap's arguments (before the command) for one user's process. */
export function bwrapArgs(m: SandboxMounts, exists: (p: string) => fs.Stats | undefined = lstat): string[] {
  const args = [
    "--die-with-parent",
    "--new-session",
    "--unshare-user",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--uid",
    SANDBOX_ID,
    "--gid",
    SANDBOX_ID,
    "--hostname",
    "sandbox",
    "--cap-drop",
    "ALL",
  ];
  for (const p of SYSTEM_PATHS) {
    const st = exists(p);
    if (!st) continue;
    if (st.isSymbolicLink()) args.push("--symlink", fs.readlinkSync(p), p);
    else args.push("--ro-bind", p, p);
  }
  for (const p of ETC_PATHS) if (exists(p)) args.push("--ro-bind", p, p);
  args.push("--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp");
  args.push("--ro-bind", path.dirname(m.binary), path.dirname(m.binary));
  args.push("--bind", m.dataDir, m.dataDir);
  args.push("--bind", m.workspaceDir, m.workspaceDir);
  args.push("--chdir", m.workspaceDir);
  return args;
}

function lstat(p: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(p);
  } catch {
    return undefined;
  }
}

/**
 * Whether bwrap can build a sandbox here (installed, user namespaces allowed). Undefined when
 * it can; otherwise why not, for the operator.
 */
export function sandboxProblem(bwrap = "bwrap"): string | undefined {
  const r = spawnSync(bwrap, ["--unshare-user", "--unshare-pid", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"], {
    encoding: "utf8",
    timeout: 10_000,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
  });
  if (r.error) return `bubblewrap (${bwrap}) cannot run: ${(r.error as NodeJS.ErrnoException).code ?? r.error.message} — install it (Debian/Ubuntu: apt install bubblewrap)`;
  if (r.status !== 0) return `bubblewrap cannot create a sandbox here (user namespaces not allowed?): ${r.stderr.trim().slice(0, 300)}`;
  return undefined;
}
