/**
 * One bridge network per user for docker-mode runners.
 *
 * Runners on different bridges cannot reach each other: Docker's own isolation chains
 * (DOCKER-ISOLATION-STAGE-1/2) drop traffic between its bridges. A user's network is named
 * `<RUNNER_NETWORK>-<user hash>`, labelled `open-persona.managed=true` and
 * `open-persona.user=<hash>`, and gets an explicit subnet from RUNNER_SUBNET_POOL.
 *
 * The sidecar reaches a runner at its address on that network: from the host through the
 * bridge's route, from a container (SIDECAR_CONTAINER) after joining the network itself.
 * A network lives as long as its user's container: kept while the container is only stopped,
 * removed by {@link RunnerNetworks.prune} once the container is gone.
 */
import type Docker from "dockerode";
import type { Logger } from "../log/logger.js";
import { candidateSubnets, type SubnetPool } from "./docker-subnets.js";

export const NETWORK_LABEL_USER = "open-persona.user";
export const NETWORK_LABEL_MANAGED = "open-persona.managed";

type EngineError = { statusCode?: number; message?: string; json?: { message?: string } };
const text = (e: EngineError) => e.json?.message ?? e.message ?? "";

/** The engine refused a subnet that another network (of any deployment) already uses. */
export const isPoolOverlap = (e: EngineError) => /overlaps/i.test(text(e));

export class SubnetPoolExhaustedError extends Error {
  constructor(pool: string) {
    super(`no free subnet left in RUNNER_SUBNET_POOL ${pool}`);
    this.name = "SubnetPoolExhaustedError";
  }
}

export interface RunnerNetworksOptions {
  docker: Docker;
  /** RUNNER_NETWORK: the prefix of every user network's name. */
  prefix: string;
  pool: SubnetPool;
  /** Resolves to the sidecar's own container id, undefined on the host. */
  self: () => Promise<string | undefined>;
  log: Logger;
}

export class RunnerNetworks {
  constructor(private readonly opts: RunnerNetworksOptions) {}

  name(hash: string): string {
    return `${this.opts.prefix}-${hash}`;
  }

  /** The user's network, created when missing. The caller holds the user's lock. */
  async ensure(hash: string): Promise<string> {
    const name = this.name(hash);
    const { docker, pool } = this.opts;
    const existing = await docker
      .getNetwork(name)
      .inspect()
      .catch((e: EngineError) => {
        if (e.statusCode === 404) return undefined;
        throw e;
      });
    if (existing) return name;
    // Skip what the engine already uses; a network made meanwhile shows as an overlap error.
    const networks = await docker.listNetworks();
    const taken = networks.flatMap((n) => (n.IPAM?.Config ?? []).map((c) => c.Subnet).filter((s): s is string => !!s));
    const subnet = await this.createOnFreeSubnet(name, { [NETWORK_LABEL_MANAGED]: "true", [NETWORK_LABEL_USER]: hash }, candidateSubnets(pool, hash, taken));
    this.opts.log.info({ user: hash, network: name, subnet }, "created user network");
    return name;
  }

  /**
   * Creates a bridge on the first subnet the engine accepts; "Pool overlaps" moves on to the
   * next one (another network, perhaps not ours, took it). A 409 means another sidecar made
   * this very network first: that one is used.
   */
  async createOnFreeSubnet(name: string, labels: Record<string, string>, subnets: Iterable<string>): Promise<string | undefined> {
    for (const subnet of subnets) {
      try {
        await this.opts.docker.createNetwork({
          Name: name,
          Driver: "bridge",
          CheckDuplicate: true,
          Labels: labels,
          IPAM: { Driver: "default", Config: [{ Subnet: subnet }] },
        });
        return subnet;
      } catch (e) {
        if ((e as EngineError).statusCode === 409) return undefined;
        if (!isPoolOverlap(e as EngineError)) throw e;
        // Taken by this very network, made meanwhile by another sidecar: use it (a second
        // network of the same name on the next subnet would make the name ambiguous).
        if ((await this.opts.docker.listNetworks({ filters: { name: [name] } })).some((n) => n.Name === name)) return undefined;
        this.opts.log.debug({ network: name, subnet }, "subnet taken; trying the next");
      }
    }
    throw new SubnetPoolExhaustedError(this.opts.pool.cidr);
  }

  /** Joins the sidecar's own container (if it runs in one) to a user network; idempotent. */
  async attachSelf(network: string): Promise<void> {
    const self = await this.opts.self();
    if (!self) return;
    await this.opts.docker
      .getNetwork(network)
      .connect({ Container: self })
      .catch((e: EngineError) => {
        // 403 "endpoint ... already exists": joined before (by us or a sidecar restarted in place).
        if (!/already exists/i.test(text(e))) throw e;
      });
  }

  /** Leaves a user network (the runner stopped); idempotent. */
  async detachSelf(network: string): Promise<void> {
    const self = await this.opts.self();
    if (!self) return;
    await this.opts.docker
      .getNetwork(network)
      .disconnect({ Container: self, Force: true })
      .catch((e: EngineError) => {
        if (e.statusCode !== 404 && !/is not connected/i.test(text(e))) throw e;
      });
  }

  /**
   * Removes the networks of this deployment whose user has no container any more (removed by
   * an operator, or by a sidecar replacing a container on the old shared network). Only
   * networks older than `minAgeMs`: a younger one may belong to a container another sidecar
   * is creating right now.
   */
  async prune(hasContainer: (hash: string) => Promise<boolean>, minAgeMs: number, now = Date.now()): Promise<string[]> {
    const { docker, log } = this.opts;
    const ours = await docker.listNetworks({ filters: { label: [`${NETWORK_LABEL_MANAGED}=true`] } });
    const removed: string[] = [];
    for (const n of ours) {
      const hash = n.Labels?.[NETWORK_LABEL_USER];
      if (!hash || n.Name !== this.name(hash)) continue;
      if (now - Date.parse(n.Created) < minAgeMs || (await hasContainer(hash))) continue;
      await this.detachSelf(n.Name).catch(() => {});
      try {
        await docker.getNetwork(n.Id).remove();
        removed.push(n.Name);
        log.info({ user: hash, network: n.Name }, "removed user network (its runner is gone)");
      } catch (e) {
        // "has active endpoints": something else joined it; leave it to the operator.
        if ((e as EngineError).statusCode !== 404) log.warn({ user: hash, network: n.Name, err: text(e as EngineError) }, "could not remove user network");
      }
    }
    return removed;
  }
}
