/**
 * What may leave a workspace. Two layers:
 * - `admit`: the rules every reader of a workspace obeys (knowledge-base sync, artifacts):
 *   never anything outside the workspace (symlinks resolved), the agent's and the sidecar's
 *   own files, `.git/`, `node_modules/`, paths a `.gitignore` matches, secrets, files over a
 *   size cap, empty files.
 * - `check`: what the knowledge base takes on top: no binaries other than documents (Open
 *   WebUI 0.12 "processes" an image or an executable as text and indexes the garbage), and
 *   (unless allowed) no HTML/SVG, which Open WebUI's previewers have rendered unsafely before.
 */
import fs from "node:fs/promises";
import path from "node:path";
import ignore, { type Ignore } from "ignore";
import { looksBinary } from "../media/file-signatures.js";

export type Verdict = { sync: true; realPath: string; size: number; mtimeMs: number; ctimeMs: number } | { sync: false; reason: string };

export interface SyncFilterOptions {
  maxBytes: number;
  allowHtml: boolean;
}

/** Directories never synced, wherever they appear. */
const SKIP_DIRS = new Set([".git", ".opencode", "node_modules", ".venv", "__pycache__"]);

/** Secrets by name: .env files, keys, certificates, credential stores. */
const SECRET_NAMES: RegExp[] = [
  /^\.env(\..*)?$/i,
  /\.(pem|key|p12|pfx|jks|keystore|crt|cer|der|kdbx|gpg|asc)$/i,
  /^id_(rsa|dsa|ecdsa|ed25519)(\.pub)?$/i,
  /^\.?(credentials|secrets?)(\.[a-z]+)?$/i,
  /^\.(netrc|npmrc|pypirc|pgpass|htpasswd|git-credentials)$/i,
  /(^|[-_.])(credentials|service-account)([-_.].*)?\.json$/i,
];

const HTML_LIKE = /\.(html?|xhtml|svg|svgz)$/i;

/** Binary formats Open WebUI extracts text from (its document loaders). */
const DOCUMENTS = /\.(pdf|docx?|xlsx?|pptx?|odt|ods|odp|epub|rtf|msg|eml)$/i;

async function fileLooksBinary(file: string): Promise<boolean> {
  const fh = await fs.open(file, "r");
  try {
    const buf = Buffer.alloc(8000);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return looksBinary(buf.subarray(0, bytesRead));
  } finally {
    await fh.close();
  }
}

/** How many binary verdicts are remembered before the memory starts over. */
const BINARY_CACHE_MAX = 50_000;

/** Refused by name wherever it is: tool and VCS directories, secrets. */
function refusedName(rel: string): Verdict | undefined {
  const parts = rel.split("/");
  if (parts.some((p) => SKIP_DIRS.has(p))) return { sync: false, reason: "tool or VCS directory" };
  if (SECRET_NAMES.some((re) => re.test(parts.at(-1)!))) return { sync: false, reason: "looks like a secret" };
  return undefined;
}

export class SyncFilter {
  private readonly ignoreCache = new Map<string, { mtimeMs: number; ig: Ignore }>();
  /**
   * Real path → the binary verdict for one version (size, mtime). A skipped file is never in
   * the sync manifest, so every turn's reconciliation checks it again: without this, every
   * image in a workspace would be opened and read after every turn.
   */
  private readonly binaryCache = new Map<string, { size: number; mtimeMs: number; binary: boolean }>();

  constructor(private readonly opts: SyncFilterOptions) {}

  /** The knowledge base's size cap. */
  get maxBytes(): number {
    return this.opts.maxBytes;
  }

  /** The workspace-relative path of `abs`, or undefined when it lies outside. */
  relative(workspace: string, abs: string): string | undefined {
    const rel = path.relative(workspace, abs);
    if (!rel || rel === ".." || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) return undefined;
    return rel.split(path.sep).join("/");
  }

  /** Name-only checks of the sync (no I/O): usable for paths that no longer exist. */
  byName(rel: string): Verdict | undefined {
    const refused = refusedName(rel);
    if (refused) return refused;
    if (!this.opts.allowHtml && HTML_LIKE.test(rel)) return { sync: false, reason: "HTML/SVG is not synced (OPENWEBUI_SYNC_ALLOW_HTML)" };
    return undefined;
  }

  /** What the knowledge base takes: {@link admit}, then no HTML (unless allowed) and no binaries but documents. */
  async check(workspace: string, rel: string): Promise<Verdict> {
    const named = this.byName(rel);
    if (named) return named;
    const verdict = await this.admit(workspace, rel, this.opts.maxBytes);
    if (!verdict.sync) return verdict;
    if (!DOCUMENTS.test(rel) && (await this.binary(verdict.realPath, verdict))) return { sync: false, reason: "binary file with no text to index" };
    return verdict;
  }

  /** The rules every reader of a workspace obeys (see the top of this file). */
  async admit(workspace: string, rel: string, maxBytes: number): Promise<Verdict> {
    const named = refusedName(rel);
    if (named) return named;
    if (await this.ignored(workspace, rel)) return { sync: false, reason: "matched by .gitignore" };
    const abs = path.join(workspace, rel);
    let real: string;
    let realRoot: string;
    try {
      [real, realRoot] = await Promise.all([fs.realpath(abs), fs.realpath(workspace)]);
    } catch {
      return { sync: false, reason: "gone" };
    }
    if (this.relative(realRoot, real) === undefined) return { sync: false, reason: "resolves outside the workspace" };
    const st = await fs.stat(real).catch(() => undefined);
    if (!st) return { sync: false, reason: "gone" };
    if (!st.isFile()) return { sync: false, reason: "not a regular file" };
    if (st.size > maxBytes) return { sync: false, reason: `larger than ${maxBytes} bytes` };
    if (st.size === 0) return { sync: false, reason: "empty" };
    return { sync: true, realPath: real, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs };
  }

  private async binary(real: string, st: { size: number; mtimeMs: number }): Promise<boolean> {
    const known = this.binaryCache.get(real);
    if (known && known.size === st.size && known.mtimeMs === st.mtimeMs) return known.binary;
    const binary = await fileLooksBinary(real);
    if (this.binaryCache.size >= BINARY_CACHE_MAX) this.binaryCache.clear();
    this.binaryCache.set(real, { size: st.size, mtimeMs: st.mtimeMs, binary });
    return binary;
  }

  /**
   * Lists candidate files (relative paths), skipping excluded directories early: up to
   * `limit` files whose name `accept` takes (every file by default).
   */
  async list(workspace: string, limit = 20_000, accept: (name: string) => boolean = () => true): Promise<string[]> {
    const out: string[] = [];
    const walk = async (dirRel: string): Promise<void> => {
      const entries = await fs.readdir(path.join(workspace, dirRel), { withFileTypes: true }).catch(() => []);
      for (const e of entries) {
        if (out.length >= limit) return;
        const rel = dirRel ? `${dirRel}/${e.name}` : e.name;
        if (e.isDirectory()) {
          if (!SKIP_DIRS.has(e.name) && !(await this.ignored(workspace, `${rel}/`))) await walk(rel);
        } else if ((e.isFile() || e.isSymbolicLink()) && accept(e.name)) out.push(rel);
      }
    };
    await walk("");
    return out;
  }

  /** `.gitignore` files from the workspace root down to the path's directory. */
  private async ignored(workspace: string, rel: string): Promise<boolean> {
    const parts = rel.split("/");
    for (let i = 0; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      const ig = await this.gitignore(path.join(workspace, dir));
      if (!ig) continue;
      const sub = parts.slice(i).join("/");
      if (sub && ig.ignores(sub)) return true;
    }
    return false;
  }

  private async gitignore(dir: string): Promise<Ignore | undefined> {
    const file = path.join(dir, ".gitignore");
    const st = await fs.stat(file).catch(() => undefined);
    if (!st) return undefined;
    const cached = this.ignoreCache.get(file);
    if (cached && cached.mtimeMs === st.mtimeMs) return cached.ig;
    const ig = ignore().add(await fs.readFile(file, "utf8"));
    this.ignoreCache.set(file, { mtimeMs: st.mtimeMs, ig });
    return ig;
  }
}
