/**
 * What may leave a workspace. Two layers:
 * - `admit`: the rules every reader of a workspace obeys (knowledge-base sync, artifacts):
 *   never anything outside the workspace (symlinks resolved), the agent's and the sidecar's
 *   own files, `.git/`, `node_modules/`, paths a `.gitignore` matches, secrets, files over a
 *   size cap, empty files.
 * - `check`: what the knowledge base takes on top: no binaries other than documents (Open
 *   WebUI 0.12 "processes" an image or an executable as text and indexes the garbage), and
 *   (unless allowed) no HTML/SVG, which Open WebUI's previewers have rendered unsafely before.
 * Both read the workspace through a WorkspaceFiles (workspace/workspace-files.ts): the disk,
 * or the user's runner. Where the reader has no stat (runner), the size cap, "empty" and
 * "binary" are decided on the bytes read (`admitted`, `take`): one set of rules either way.
 */
import path from "node:path";
import ignore, { type Ignore } from "ignore";
import { looksBinary } from "../media/file-signatures.js";
import type { ReadInside } from "../workspace/read-inside.js";
import type { FileFacts, WorkspaceFiles } from "../workspace/workspace-files.js";

/** `facts`: what a stat said (disk); absent where the reader has none (runner): the read decides. */
export type Verdict = { sync: true; facts?: FileFacts } | { sync: false; reason: string };

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

/** How many binary verdicts are remembered before the memory starts over. */
const BINARY_CACHE_MAX = 50_000;
/** What `looksBinary` is shown of a file. */
const SNIFF_BYTES = 8000;
/** A `.gitignore` larger than this is not one. */
const GITIGNORE_MAX_BYTES = 1024 * 1024;

/** Refused by name wherever it is: tool and VCS directories, secrets. */
function refusedName(rel: string): Verdict | undefined {
  const parts = rel.split("/");
  if (parts.some((p) => SKIP_DIRS.has(p))) return { sync: false, reason: "tool or VCS directory" };
  if (SECRET_NAMES.some((re) => re.test(parts.at(-1)!))) return { sync: false, reason: "looks like a secret" };
  return undefined;
}

export class SyncFilter {
  /**
   * Each reader's `.gitignore` files, read once per reader (a reader serves one pass: a
   * reconciliation, a run of the outbox, a turn's artifacts).
   */
  private readonly ignores = new WeakMap<WorkspaceFiles, Map<string, Promise<Ignore | undefined>>>();
  /**
   * Path and version (size, mtime) → the binary verdict, where a stat gives a version (disk).
   * A skipped file is never in the sync manifest, so every turn's reconciliation checks it
   * again: without this, every image in a workspace would be read after every turn.
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

  /**
   * What the knowledge base takes, before reading all of it: {@link admit}, then no HTML
   * (unless allowed), and (where a stat gives a version to remember it by) no binaries but
   * documents. `take` decides for good, on the bytes.
   */
  async check(files: WorkspaceFiles, rel: string): Promise<Verdict> {
    const named = this.byName(rel);
    if (named) return named;
    const verdict = await this.admit(files, rel, this.opts.maxBytes);
    if (!verdict.sync || !verdict.facts || DOCUMENTS.test(rel)) return verdict;
    const known = this.binaryVerdict(files, rel, verdict.facts);
    const binary = known ?? (await this.sniff(files, rel, verdict.facts));
    return binary ? NO_TEXT : verdict;
  }

  /** The bytes the knowledge base takes of `rel`, or why not: what {@link check} says, decided on the bytes read (one read). */
  async take(files: WorkspaceFiles, rel: string): Promise<ReadInside> {
    const verdict = this.byName(rel) ?? (await this.admit(files, rel, this.opts.maxBytes));
    if (!verdict.sync) return { ok: false, reason: verdict.reason };
    const text = DOCUMENTS.test(rel);
    if (!text && verdict.facts && this.binaryVerdict(files, rel, verdict.facts)) return { ok: false, reason: NO_TEXT.reason };
    const file = await this.read(files, rel, this.opts.maxBytes);
    if (!file.ok || text) return file;
    return this.remember(files, rel, verdict.facts, file.bytes) ? { ok: false, reason: NO_TEXT.reason } : file;
  }

  /** The rules every reader of a workspace obeys (see the top of this file), short of reading the file. */
  async admit(files: WorkspaceFiles, rel: string, maxBytes: number): Promise<Verdict> {
    const named = refusedName(rel);
    if (named) return named;
    if (await this.ignored(files, rel)) return { sync: false, reason: "matched by .gitignore" };
    const looked = await files.look(rel);
    if (!looked) return { sync: true };
    if (!looked.ok) return { sync: false, reason: looked.reason };
    const refused = sizeRefused(looked.size, maxBytes);
    if (refused) return { sync: false, reason: refused };
    return { sync: true, facts: { size: looked.size, mtimeMs: looked.mtimeMs, ctimeMs: looked.ctimeMs } };
  }

  /** The bytes of `rel` every reader may take: {@link admit}, then the read (the cap, and no empty file, whatever the reader could stat). */
  async admitted(files: WorkspaceFiles, rel: string, maxBytes: number): Promise<ReadInside> {
    const verdict = await this.admit(files, rel, maxBytes);
    return verdict.sync ? this.read(files, rel, maxBytes) : { ok: false, reason: verdict.reason };
  }

  private async read(files: WorkspaceFiles, rel: string, maxBytes: number): Promise<ReadInside> {
    const file = await files.read(rel, maxBytes);
    const refused = file.ok && sizeRefused(file.size, maxBytes);
    return refused ? { ok: false, reason: refused } : file;
  }

  private binaryVerdict(files: WorkspaceFiles, rel: string, facts: FileFacts): boolean | undefined {
    const known = this.binaryCache.get(`${files.id}\0${rel}`);
    return known && known.size === facts.size && known.mtimeMs === facts.mtimeMs ? known.binary : undefined;
  }

  private async sniff(files: WorkspaceFiles, rel: string, facts: FileFacts): Promise<boolean> {
    const file = await files.read(rel, this.opts.maxBytes);
    // Gone or swapped meanwhile: `take` finds out for good.
    return file.ok && this.remember(files, rel, facts, file.bytes);
  }

  /** Whether `bytes` look binary, remembered for this version where there is one (`facts`). */
  private remember(files: WorkspaceFiles, rel: string, facts: FileFacts | undefined, bytes: Buffer): boolean {
    const binary = looksBinary(bytes.subarray(0, SNIFF_BYTES));
    if (!facts) return binary;
    if (this.binaryCache.size >= BINARY_CACHE_MAX) this.binaryCache.clear();
    this.binaryCache.set(`${files.id}\0${rel}`, { size: facts.size, mtimeMs: facts.mtimeMs, binary });
    return binary;
  }

  /**
   * Lists candidate files (relative paths), skipping excluded directories early: up to
   * `limit` files whose name `accept` takes (every file by default).
   */
  async list(files: WorkspaceFiles, limit = 20_000, accept: (name: string) => boolean = () => true): Promise<string[]> {
    const out: string[] = [];
    const walk = async (dirRel: string): Promise<void> => {
      for (const e of await files.list(dirRel)) {
        if (out.length >= limit) return;
        const rel = dirRel ? `${dirRel}/${e.name}` : e.name;
        if (e.dir) {
          if (!SKIP_DIRS.has(e.name) && !(await this.ignored(files, `${rel}/`))) await walk(rel);
        } else if (accept(e.name)) out.push(rel);
      }
    };
    await walk("");
    return out;
  }

  /** `.gitignore` files from the workspace root down to the path's directory. */
  private async ignored(files: WorkspaceFiles, rel: string): Promise<boolean> {
    const parts = rel.split("/");
    for (let i = 0; i < parts.length; i++) {
      const ig = await this.gitignore(files, parts.slice(0, i).join("/"));
      if (!ig) continue;
      const sub = parts.slice(i).join("/");
      if (sub && ig.ignores(sub)) return true;
    }
    return false;
  }

  private gitignore(files: WorkspaceFiles, dir: string): Promise<Ignore | undefined> {
    let read = this.ignores.get(files);
    if (!read) this.ignores.set(files, (read = new Map()));
    let ig = read.get(dir);
    if (!ig) {
      ig = files.read(dir ? `${dir}/.gitignore` : ".gitignore", GITIGNORE_MAX_BYTES).then((f) => (f.ok ? ignore().add(f.bytes.toString("utf8")) : undefined));
      read.set(dir, ig);
    }
    return ig;
  }
}

const NO_TEXT = { sync: false, reason: "binary file with no text to index" } as const;

function sizeRefused(size: number, maxBytes: number): string | undefined {
  if (size > maxBytes) return `larger than ${maxBytes} bytes`;
  if (size === 0) return "empty";
  return undefined;
}
