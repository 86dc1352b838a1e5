/**
 * Secrets the sidecar makes for itself (the runner secret, the artifact signing key) when the
 * operator sets none: generated once and kept under STATE_ROOT, so restarts agree.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";

/**
 * Where the sidecar's own secrets come from: one STATE_ROOT (FileSecrets) or, for replicas
 * that share no STATE_ROOT, the database (db/pg-secrets.ts). Whoever asks first makes it.
 */
export interface SecretSource {
  get(name: string): Promise<string>;
}

export class FileSecrets implements SecretSource {
  constructor(private readonly stateRoot: string) {}

  async get(name: string): Promise<string> {
    return persistentSecret(path.join(this.stateRoot, name));
  }
}

/**
 * A secret generated once and kept under STATE_ROOT, so restarts derive the same passwords.
 *
 * Several sidecars may boot at once on one STATE_ROOT (compose scaling, a restart overlapping
 * the old process): the file is written in full under a private temporary name and only then
 * linked into place. `link` never replaces an existing file, so exactly one process creates it
 * and every process then reads that one secret; nobody ever sees it empty or half-written.
 */
export function persistentSecret(file: string): string {
  const existing = readSecret(file);
  if (existing) return existing;
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
  const fd = fs.openSync(tmp, "wx", 0o600);
  try {
    fs.writeSync(fd, randomBytes(32).toString("base64url"));
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    if (existing === "") {
      // An empty file can only be the remains of an interrupted write by an older version
      // (which created the file before writing it): replace it.
      fs.renameSync(tmp, file);
    } else {
      fs.linkSync(tmp, file);
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e; // another process was first: use its secret
  } finally {
    fs.rmSync(tmp, { force: true });
  }
  const secret = readSecret(file);
  if (!secret) throw new Error(`Could not create the runner secret at ${file}`);
  return secret;
}

/** The secret in `file`: undefined when there is no file, "" when it is empty. */
function readSecret(file: string): string | undefined {
  try {
    return fs.readFileSync(file, "utf8").trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}
