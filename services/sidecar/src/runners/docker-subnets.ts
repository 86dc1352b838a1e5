/**
 * IPv4 subnet arithmetic for the per-user runner networks (RUNNER_SUBNET_POOL).
 *
 * Every user network gets an explicit small subnet cut from one pool: Docker's default
 * address pools hold only ~30 networks (31 × /16 and /20 blocks), far too few for one bridge
 * per user, and an explicit pool is also what the host firewall (scripts/runner-firewall.sh)
 * matches runner traffic by.
 */

/** A pool cut into equal subnets: `base/poolPrefix` split into `/prefix` pieces. */
export interface SubnetPool {
  /** The pool as written, normalized: `10.213.0.0/16`. */
  cidr: string;
  base: number;
  poolPrefix: number;
  /** Prefix length of each user's subnet (a /29 leaves 5 hosts: runner, sidecar, spare). */
  prefix: number;
}

/** The largest subnet prefix allowed: a /29 holds the gateway, the runner and a sidecar. */
export const MAX_SUBNET_PREFIX = 29;

export function ipToInt(ip: string): number {
  const parts = ip.split(".");
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) throw new Error(`"${ip}" is not an IPv4 address`);
  return parts.reduce((n, p) => n * 256 + Number(p), 0);
}

export function intToIp(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join(".");
}

/** `a.b.c.d/n` → base and prefix; the address must be the network's own (no host bits). */
export function parseCidr(cidr: string): { base: number; prefix: number } {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(cidr.trim());
  if (!m) throw new Error(`"${cidr}" is not an IPv4 CIDR like 10.213.0.0/16`);
  const base = ipToInt(m[1]!);
  const prefix = Number(m[2]);
  if (prefix > 32) throw new Error(`"${cidr}": prefix must be at most 32`);
  if (base % 2 ** (32 - prefix) !== 0) throw new Error(`"${cidr}" has host bits set (did you mean ${intToIp(base - (base % 2 ** (32 - prefix)))}/${prefix}?)`);
  return { base, prefix };
}

/** Ranges a runner subnet must never take: loopback, link-local (cloud metadata), multicast and above. */
const FORBIDDEN: Array<[string, string]> = [
  ["0.0.0.0/8", "the unspecified range"],
  ["127.0.0.0/8", "loopback"],
  ["169.254.0.0/16", "link-local (cloud metadata)"],
  ["224.0.0.0/3", "multicast and reserved"],
];

/** Parses and checks a pool; throws an Error whose message says what is wrong. */
export function parseSubnetPool(cidr: string, prefix: number): SubnetPool {
  const pool = parseCidr(cidr);
  if (pool.prefix < 8) throw new Error(`"${cidr}" is too large (at most a /8)`);
  if (prefix < pool.prefix || prefix > MAX_SUBNET_PREFIX) {
    throw new Error(`subnet prefix /${prefix} must lie between the pool's /${pool.prefix} and /${MAX_SUBNET_PREFIX}`);
  }
  const normalized = `${intToIp(pool.base)}/${pool.prefix}`;
  for (const [range, what] of FORBIDDEN) {
    if (overlaps(normalized, range)) throw new Error(`"${cidr}" overlaps ${range} (${what})`);
  }
  return { cidr: normalized, base: pool.base, poolPrefix: pool.prefix, prefix };
}

export function subnetCount(pool: SubnetPool): number {
  return 2 ** (pool.prefix - pool.poolPrefix);
}

/** The i-th subnet of the pool, as a CIDR. */
export function subnetAt(pool: SubnetPool, i: number): string {
  return `${intToIp(pool.base + i * 2 ** (32 - pool.prefix))}/${pool.prefix}`;
}

/** Whether two CIDRs share an address. */
export function overlaps(a: string, b: string): boolean {
  const x = parseCidr(a);
  const y = parseCidr(b);
  const xEnd = x.base + 2 ** (32 - x.prefix);
  const yEnd = y.base + 2 ** (32 - y.prefix);
  return x.base < yEnd && y.base < xEnd;
}

/**
 * Every subnet of the pool once, starting at a slot derived from the user hash and wrapping
 * around: a user tends to get the same subnet back, and sidecars creating networks for
 * different users at once rarely try the same one. Subnets overlapping `taken` are skipped.
 */
export function* candidateSubnets(pool: SubnetPool, userHash: string, taken: readonly string[] = []): Generator<string> {
  const count = subnetCount(pool);
  const start = Number.parseInt(userHash.slice(0, 8), 16) % count || 0;
  for (let k = 0; k < count; k++) {
    const subnet = subnetAt(pool, (start + k) % count);
    if (!taken.some((t) => safeOverlaps(subnet, t))) yield subnet;
  }
}

/** `overlaps`, where an unparsable CIDR (IPv6, from another network) overlaps nothing. */
function safeOverlaps(a: string, b: string): boolean {
  try {
    return overlaps(a, b);
  } catch {
    return false;
  }
}
