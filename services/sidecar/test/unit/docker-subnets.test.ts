import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../src/config/config.js";
import { containerIdsIn } from "../../src/runners/docker-self.js";
import { candidateSubnets, overlaps, parseCidr, parseSubnetPool, subnetAt, subnetCount } from "../../src/runners/docker-subnets.js";

describe("subnet pool", () => {
  it("cuts a /16 into 4096 /28s, in address order", () => {
    const pool = parseSubnetPool("10.213.0.0/16", 28);
    expect(subnetCount(pool)).toBe(4096);
    expect(subnetAt(pool, 0)).toBe("10.213.0.0/28");
    expect(subnetAt(pool, 1)).toBe("10.213.0.16/28");
    expect(subnetAt(pool, 16)).toBe("10.213.1.0/28");
    expect(subnetAt(pool, 4095)).toBe("10.213.255.240/28");
  });

  it("offers every subnet once, starting at the user's slot, skipping taken ones", () => {
    const pool = parseSubnetPool("10.214.0.0/26", 28); // four subnets
    const hash = "00000002aaaaaaaa"; // slot 2
    expect([...candidateSubnets(pool, hash)]).toEqual(["10.214.0.32/28", "10.214.0.48/28", "10.214.0.0/28", "10.214.0.16/28"]);
    // A /27 elsewhere covers two of them; an IPv6 subnet of another network overlaps nothing.
    const taken = ["10.214.0.32/27", "fd00::/64", "172.17.0.0/16"];
    expect([...candidateSubnets(pool, hash, taken)]).toEqual(["10.214.0.0/28", "10.214.0.16/28"]);
    expect([...candidateSubnets(pool, hash, ["10.0.0.0/8"])]).toEqual([]);
  });

  it("tells overlapping ranges apart from adjacent ones", () => {
    expect(overlaps("10.0.0.0/28", "10.0.0.8/29")).toBe(true);
    expect(overlaps("10.0.0.0/28", "10.0.0.16/28")).toBe(false);
    expect(overlaps("0.0.0.0/0", "255.255.255.255/32")).toBe(true);
  });

  it("refuses malformed CIDRs, host bits, and ranges runners must never take", () => {
    expect(() => parseCidr("10.213.0.0")).toThrow(/not an IPv4 CIDR/);
    expect(() => parseCidr("10.213.0.256/24")).toThrow(/not an IPv4 address/);
    expect(() => parseCidr("10.213.0.1/16")).toThrow(/host bits set \(did you mean 10\.213\.0\.0\/16\?\)/);
    expect(() => parseSubnetPool("169.254.0.0/16", 28)).toThrow(/link-local/);
    expect(() => parseSubnetPool("127.0.0.0/8", 28)).toThrow(/loopback/);
    expect(() => parseSubnetPool("10.213.0.0/16", 30)).toThrow(/between/);
    expect(() => parseSubnetPool("10.213.0.0/24", 20)).toThrow(/between/);
  });
});

describe("docker config: subnet pool, runtime, sidecar container", () => {
  it("defaults to 10.213.0.0/16 in /28s, the engine's runtime and detection", () => {
    const c = loadConfig({ RUNNER_MODE: "docker" }).docker;
    expect(c.subnetPool).toMatchObject({ cidr: "10.213.0.0/16", prefix: 28 });
    expect(c.runtime).toBeUndefined();
    expect(c.selfContainer).toBe("auto");
  });

  it("takes a pool, a subnet size, a runtime and a container name", () => {
    const c = loadConfig({ RUNNER_SUBNET_POOL: "172.30.0.0/20", RUNNER_SUBNET_PREFIX: "29", RUNNER_RUNTIME: "runsc", SIDECAR_CONTAINER: "op-sidecar" }).docker;
    expect(c.subnetPool).toMatchObject({ cidr: "172.30.0.0/20", poolPrefix: 20, prefix: 29 });
    expect(c.runtime).toBe("runsc");
    expect(c.selfContainer).toBe("op-sidecar");
  });

  it.each([
    [{ RUNNER_SUBNET_POOL: "10.213.0.0" }, "RUNNER_SUBNET_POOL"],
    [{ RUNNER_SUBNET_POOL: "10.213.5.0/16" }, "RUNNER_SUBNET_POOL"],
    [{ RUNNER_SUBNET_POOL: "169.254.0.0/16" }, "RUNNER_SUBNET_POOL"],
    [{ RUNNER_SUBNET_POOL: "10.213.0.0/24", RUNNER_SUBNET_PREFIX: "22" }, "RUNNER_SUBNET_PREFIX"],
    [{ RUNNER_SUBNET_PREFIX: "30" }, "RUNNER_SUBNET_PREFIX"],
    [{ RUNNER_RUNTIME: "runsc --debug" }, "RUNNER_RUNTIME"],
    [{ RUNNER_NETWORK: "bad/name" }, "RUNNER_NETWORK"],
  ])("refuses %o with a ConfigError naming %s", (env, variable) => {
    let err: unknown;
    try {
      loadConfig(env);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).variable).toBe(variable);
  });
});

describe("the sidecar's own container id", () => {
  it("is found in the bind mounts Docker makes for /etc/hostname (mountinfo) and in cgroup v1 paths", () => {
    const id = "4f".repeat(32);
    const mountinfo = [
      "611 593 0:52 / / rw,relatime master:289 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X",
      `631 611 254:1 /var/lib/docker/containers/${id}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda1 rw`,
      `632 611 254:1 /var/lib/docker/containers/${id}/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw`,
    ].join("\n");
    expect(containerIdsIn(mountinfo)).toEqual([id]);
    const other = "a1".repeat(32);
    expect(containerIdsIn(`12:pids:/docker/${other}\n0::/system.slice/docker-${other}.scope`)).toEqual([other]);
    // On the host: nothing that looks like a container.
    expect(containerIdsIn("0::/\n22 1 8:1 / / rw - ext4 /dev/sda1 rw")).toEqual([]);
  });
});
