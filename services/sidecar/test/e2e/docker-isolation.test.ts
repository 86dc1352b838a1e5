/**
 * RUNNER_MODE=docker isolation, probed from inside a runner the way a hostile agent would: the
 * scripted model makes Alice's agent run shell commands, and the test reads what they printed.
 * Per-user networks keep Alice's runner away from Bob's; scripts/runner-firewall.sh keeps it
 * away from a metadata listener on 169.254.169.254 and from host ports not allowed. Every probe
 * has a control that succeeds, so that each "blocked" could have been "reached".
 *
 * The sidecar runs in this process, on the host; a stand-in container plays the part of a
 * sidecar running in a container (SIDECAR_CONTAINER) and so is joined to each user's network.
 * Everything made here — networks, containers, volumes, iptables chains, the dummy interface —
 * is removed in afterAll.
 */
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import Docker from "dockerode";
import { SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DockerRunner, LABEL_MANAGED, LABEL_USER } from "../../src/runners/docker-runner.js";
import { candidateSubnets, overlaps, parseSubnetPool } from "../../src/runners/docker-subnets.js";
import { userHash } from "../../src/workspace/user-space.js";
import { say, scriptedOpencodeConfig, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { toolOutput as toolOutputOf } from "../fixtures/scripted-model.js";
import { readSse, SIDECAR_DIR, startSidecar, tempDir, waitFor, type InProcessSidecar, cleanupStep } from "../helpers/harness.js";
import { DockerTestUsers } from "../helpers/docker-users.js";

const docker = new Docker({ socketPath: "/var/run/docker.sock" });
const RUN = randomUUID().slice(0, 8);
const NETWORK = `op-iso-${RUN}`;
/** Apart from the default pool (10.213.0.0/16), so that nothing else is touched. */
const POOL = "10.214.0.0/24";
const GATEWAY_KEY = `gw-key-${RUN}-sidecar-only`;
const JWT_SECRET = `jwt-secret-${RUN}-sidecar-only`;
const RUNNER_SECRET = `runner-secret-${RUN}-sidecar-only`;
const FIREWALL = path.join(SIDECAR_DIR, "../../scripts/runner-firewall.sh");
const META_IF = "op-meta0";
const META_IP = "169.254.169.254";
const STAND_IN = `op-iso-sidecar-${RUN}`;
const testUsers = new DockerTestUsers(docker, RUN, NETWORK);
const user = (name: string) => testUsers.user(name);

let model: ScriptedModel;
let root: string;
let metaServer: http.Server | undefined;
let metaIf = false;
let closedServer: http.Server;
let closedPort: number;
let firewallOn = false;

function dockerEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    RUNNER_MODE: "docker",
    RUNNER_NETWORK: NETWORK,
    RUNNER_SUBNET_POOL: POOL,
    RUNNER_IDLE_TIMEOUT: "0",
    RUNNER_SECRET,
    SIDECAR_CONTAINER: STAND_IN,
    WORKSPACE_ROOT: path.join(root, "workspaces"),
    STATE_ROOT: path.join(root, "state"),
    SIDECAR_API_KEYS: GATEWAY_KEY,
    OPENWEBUI_JWT_SECRET: JWT_SECRET,
    OPENCODE_CONFIG_CONTENT: JSON.stringify(scriptedOpencodeConfig(`http://host.docker.internal:${model.port}/v1`)),
    OPENCODE_DISABLE_MODELS_FETCH: "1",
    LOG_LEVEL: "debug",
    ...extra,
  };
}

/** One turn as Open WebUI sends it with FORWARD_USER_INFO_HEADER_JWT_SECRET: identity in a signed JWT. */
async function chat(sc: InProcessSidecar, userId: string, content: string): Promise<{ status: number; error?: unknown }> {
  const jwt = await new SignJWT({ sub: userId })
    .setProtectedHeader({ alg: "HS256" })
    .setIssuer("open-webui")
    .setIssuedAt()
    .setExpirationTime("5m")
    .sign(new TextEncoder().encode(JWT_SECRET));
  const res = await fetch(`${sc.url}/v1/chat/completions`, {
    method: "POST",
    headers: { Authorization: `Bearer ${GATEWAY_KEY}`, "Content-Type": "application/json", "X-OpenWebUI-User-Jwt": jwt, "X-OpenWebUI-Chat-Id": randomUUID() },
    body: JSON.stringify({ model: "open-persona/build", stream: true, messages: [{ role: "user", content }] }),
  });
  if (res.status !== 200) return { status: res.status, error: await res.json() };
  const events = (await readSse(res)).filter((e) => e.data && e.data !== "[DONE]").map((e) => JSON.parse(e.data!) as { error?: unknown });
  return { status: 200, error: events.find((e) => e.error)?.error };
}

const toolOutput = (marker: string) => toolOutputOf(model, marker);

const containersOf = (userId: string) => testUsers.containersOf(userId);
const netName = (userId: string) => `${NETWORK}-${userHash(userId)}`;
async function containerOf(userId: string) {
  const list = await containersOf(userId);
  expect(list).toHaveLength(1);
  return docker.getContainer(list[0]!.Id).inspect();
}
const subnetOf = (net: Docker.NetworkInspectInfo) => net.IPAM?.Config?.[0]?.Subnet ?? "";
/** A container's address on a network (undefined when not attached). */
async function ipOn(container: string, network: string): Promise<string | undefined> {
  const info = await docker.getContainer(container).inspect();
  return info.NetworkSettings.Networks[network]?.IPAddress || undefined;
}

/**
 * Runs HTTP probes in parallel from the user's runner (busybox wget, 4 s each) and returns,
 * per name, whether it got an answer and what it printed. `timeout`, not `wget -T`: Debian's
 * static busybox wget segfaults with -T.
 */
async function probeFrom(sc: InProcessSidecar, userId: string, targets: Record<string, string>, extra = ""): Promise<{ results: Record<string, { ok: boolean; out: string }>; raw: string }> {
  const marker = `probe-${randomUUID()}`;
  const lines = Object.entries(targets).map(
    ([name, url]) => `( if timeout 4 wget -q -O /tmp/${name}.out '${url}' >/tmp/${name}.err 2>&1; then echo "${name}=OK $(head -c 300 /tmp/${name}.out | tr '\\n' ' ')"; else echo "${name}=FAIL $(head -c 300 /tmp/${name}.err | tr '\\n' ' ')"; fi ) &`,
  );
  const command = [`echo ${marker}`, ...lines, "wait", extra].join("\n");
  const turn = await chat(sc, userId, say.bash(command));
  expect(turn.error).toBeUndefined();
  const raw = toolOutput(marker);
  expect(raw).toContain(marker);
  const results: Record<string, { ok: boolean; out: string }> = {};
  for (const name of Object.keys(targets)) {
    const m = new RegExp(`^${name}=(OK|FAIL)(.*)$`, "m").exec(raw);
    expect(m, `probe ${name} printed nothing:\n${raw}`).toBeTruthy();
    results[name] = { ok: m![1] === "OK", out: m![2]!.trim() };
  }
  return { results, raw };
}

function firewall(...args: string[]): string {
  return execFileSync("bash", [FIREWALL, "--pool", POOL, ...args], { encoding: "utf8" });
}

beforeAll(async () => {
  await docker.ping();
  model = await startScriptedModel(0, "0.0.0.0");
  root = tempDir("op-docker-iso-");
  // A host service that no runner is allowed to reach.
  closedServer = http.createServer((_req, res) => res.end(`closed-port-${RUN}`));
  await new Promise<void>((r) => closedServer.listen(0, "0.0.0.0", r));
  closedPort = (closedServer.address() as AddressInfo).port;
  // A stand-in for cloud metadata: 169.254.169.254 bound on the host itself, on an interface of
  // its own (a bridge with no ports: some kernels here lack the dummy module). One left by a
  // run that was killed before its clean-up goes first.
  try {
    execFileSync("ip", ["link", "del", META_IF], { stdio: "ignore" });
  } catch {
    /* none left behind */
  }
  execFileSync("ip", ["link", "add", META_IF, "type", "bridge"]);
  metaIf = true;
  execFileSync("ip", ["addr", "add", `${META_IP}/32`, "dev", META_IF]);
  execFileSync("ip", ["link", "set", META_IF, "up"]);
  metaServer = http.createServer((_req, res) => res.end(`meta-secret-${RUN}`));
  await new Promise<void>((r) => metaServer!.listen(80, META_IP, r));
  // A stand-in for a sidecar in a container: the runner joins it to each user's network.
  const standIn = await docker.createContainer({
    name: STAND_IN,
    Image: "open-persona-runner:latest",
    Entrypoint: ["/bin/sh", "-c", `echo sidecar-${RUN} >/tmp/index.html && exec busybox httpd -f -p 8000 -h /tmp`],
    Labels: { "open-persona.test": RUN },
  });
  await standIn.start();
});

afterAll(async () => {
  const step = cleanupStep;
  if (firewallOn) await step("firewall", () => firewall("--remove"));
  if (metaIf) await step("metadata interface", () => execFileSync("ip", ["link", "del", META_IF], { stdio: "ignore" }));
  await step("metadata server", () => new Promise((r) => metaServer?.close(r) ?? r(null)));
  await step("closed-port server", () => new Promise((r) => closedServer?.close(r) ?? r(null)));
  await step("model", () => model?.close());
  // The stand-in leaves the users' networks with it, so it goes first.
  await step("stand-in sidecar", () => docker.getContainer(STAND_IN).remove({ force: true }));
  await step("users' containers, volumes, networks", () => testUsers.removeAll());
});

describe("per-user networks and the host firewall", () => {
  let sc: InProcessSidecar;
  const alice = user("alice");
  const bob = user("bob");
  let targets: Record<string, string>;
  let bobPassword: string;

  beforeAll(async () => {
    sc = await startSidecar(dockerEnv());
    const started = Date.now();
    expect((await chat(sc, bob, say.text("bob here"))).error).toBeUndefined();
    console.log(`first turn under runc (network + create + start + healthy + turn): ${Date.now() - started} ms`);
    expect((await chat(sc, alice, say.text("alice here"))).error).toBeUndefined();
    const bobC = await containerOf(bob);
    const bobIp = await ipOn(bobC.Id, netName(bob));
    bobPassword = bobC.Config.Env.find((e) => e.startsWith("OPENCODE_SERVER_PASSWORD="))!.split("=")[1]!;
    const [selfOnAlice, selfOnBob] = [await ipOn(STAND_IN, netName(alice)), await ipOn(STAND_IN, netName(bob))];
    expect(bobIp && selfOnAlice && selfOnBob).toBeTruthy();
    targets = {
      bob: `http://${bobIp}:4096/global/health`,
      bob_pw: `http://opencode:${bobPassword}@${bobIp}:4096/global/health`,
      sidecar_on_bob_net: `http://${selfOnBob}:8000/`,
      sidecar_on_own_net: `http://${selfOnAlice}:8000/`,
      metadata: `http://${META_IP}/latest/meta-data/`,
      closed_port: `http://host.docker.internal:${closedPort}/`,
      model_port: `http://host.docker.internal:${model.port}/v1/models`,
    };
  }, 120_000);
  afterAll(async () => sc?.close());

  it("gives each user an own labelled bridge network with a subnet from RUNNER_SUBNET_POOL", async () => {
    const subnets: string[] = [];
    for (const id of [alice, bob]) {
      const c = await containerOf(id);
      expect(Object.keys(c.NetworkSettings.Networks)).toEqual([netName(id)]);
      const net = await docker.getNetwork(netName(id)).inspect();
      expect(net.Labels).toMatchObject({ [LABEL_MANAGED]: "true", [LABEL_USER]: userHash(id) });
      const subnet = subnetOf(net);
      expect(subnet).toMatch(/\/28$/);
      expect(overlaps(subnet, POOL)).toBe(true);
      subnets.push(subnet);
      // Only the runner and the (stand-in) sidecar are on it.
      expect(Object.keys(net.Containers ?? {}).sort()).toEqual([c.Id, (await docker.getContainer(STAND_IN).inspect()).Id].sort());
    }
    expect(subnets[0]).not.toBe(subnets[1]);
  });

  it("without the firewall, the probes reach the metadata listener and the closed host port (the probes work)", async () => {
    // Controls from the host: the listeners answer, and Bob's runner answers to his password.
    expect(await (await fetch(`http://${META_IP}/`)).text()).toBe(`meta-secret-${RUN}`);
    expect(await (await fetch(`http://127.0.0.1:${closedPort}/`)).text()).toBe(`closed-port-${RUN}`);
    const auth = `Basic ${Buffer.from(`opencode:${bobPassword}`).toString("base64")}`;
    expect(await (await fetch(targets.bob!, { headers: { Authorization: auth } })).text()).toContain('"healthy":true');
    expect((await fetch(targets.bob!)).status).toBe(401);

    const { results } = await probeFrom(sc, alice, targets);
    expect(results.metadata).toMatchObject({ ok: true, out: `meta-secret-${RUN}` });
    expect(results.closed_port).toMatchObject({ ok: true, out: `closed-port-${RUN}` });
    expect(results.model_port!.ok).toBe(true);
    expect(results.sidecar_on_own_net).toMatchObject({ ok: true, out: `sidecar-${RUN}` });
    // Bob's runner is behind Docker's isolation between bridges, firewall or not.
    expect(results.bob!.ok).toBe(false);
    expect(results.bob_pw!.ok).toBe(false);
    expect(results.sidecar_on_bob_net!.ok).toBe(false);
  });

  describe("with scripts/runner-firewall.sh applied to the pool", () => {
    beforeAll(() => {
      firewall("--allow-host-port", String(model.port));
      firewallOn = true;
    });

    it("keeps Alice's runner away from Bob's runner, metadata and closed host ports, but not from the model", async () => {
      expect(await (await fetch(`http://${META_IP}/`)).text()).toBe(`meta-secret-${RUN}`); // host control
      const started = Date.now();
      const { results, raw } = await probeFrom(sc, alice, targets);
      console.log(`probe turn with blocked targets: ${Date.now() - started} ms`);
      expect(results.model_port, raw).toMatchObject({ ok: true });
      expect(results.model_port!.out).toContain('"m1"');
      expect(results.sidecar_on_own_net).toMatchObject({ ok: true, out: `sidecar-${RUN}` });
      for (const blocked of ["bob", "bob_pw", "sidecar_on_bob_net", "metadata", "closed_port"]) {
        expect(results[blocked]!.ok, `${blocked}: ${results[blocked]!.out}`).toBe(false);
        // No answer at all: not a 401 or any page from the target.
        expect(results[blocked]!.out).not.toMatch(/401|healthy|secret|closed-port|sidecar-/);
      }
    });

    it("leaves the Docker socket and the sidecar's secrets out of the runner", async () => {
      const { raw } = await probeFrom(
        sc,
        alice,
        {},
        [
          "ls -l /var/run/docker.sock /run/docker.sock 2>&1",
          "echo ENV1; tr '\\0' '\\n' </proc/1/environ",
          "echo ENVALL; for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' <$f; done 2>/dev/null | sort -u",
          "echo DONE",
        ].join("\n"),
      );
      expect(raw).toMatch(/docker\.sock: No such file or directory/);
      expect(raw).not.toMatch(/srw/);
      // Reading works: the runner's own variables are there.
      expect(raw).toMatch(/^OPENCODE_SERVER_USERNAME=opencode$/m);
      expect(raw).toContain("DONE");
      for (const secret of [GATEWAY_KEY, JWT_SECRET, RUNNER_SECRET]) expect(raw).not.toContain(secret);
    });

    it("keeps a stopped runner's network, leaves it as sidecar, and joins it again on the next request", async () => {
      const runner = sc.runner as DockerRunner;
      const before = await containerOf(alice);
      expect(await runner.stopIdle(Date.now() + 86_400_000)).toContain(userHash(alice));
      expect((await docker.getContainer(before.Id).inspect()).State.Running).toBe(false);
      expect(await docker.getNetwork(netName(alice)).inspect()).toBeTruthy();
      expect(await ipOn(STAND_IN, netName(alice))).toBeUndefined();

      // By name (Docker's DNS on the user network): the sidecar's address may change on rejoining.
      const { results } = await probeFrom(sc, alice, { sidecar_by_name: `http://${STAND_IN}:8000/` });
      expect(results.sidecar_by_name).toMatchObject({ ok: true, out: `sidecar-${RUN}` });
      expect(await ipOn(STAND_IN, netName(alice))).toBeTruthy();
      expect((await containerOf(alice)).Id).toBe(before.Id);
    });

    it("allocates around subnets already taken, and moves on when the engine says a subnet overlaps", async () => {
      const runner = sc.runner as DockerRunner;
      const pool = parseSubnetPool(POOL, 28);
      const carol = user("carol");
      // Carol's first free choice is then taken by a network that is not ours.
      const taken = (await docker.listNetworks()).flatMap((n) => (n.IPAM?.Config ?? []).map((c) => c.Subnet ?? ""));
      const first = candidateSubnets(pool, userHash(carol), taken).next().value!;
      const foreign = await docker.createNetwork({ Name: `${NETWORK}-foreign`, IPAM: { Driver: "default", Config: [{ Subnet: first }] } });
      try {
        expect((await chat(sc, carol, say.text("hi"))).error).toBeUndefined();
        const subnet = subnetOf(await docker.getNetwork(netName(carol)).inspect());
        expect(subnet).not.toBe(first);
        expect(overlaps(subnet, POOL)).toBe(true);
        // The engine's own refusal ("Pool overlaps"), as when another sidecar took it meanwhile.
        const taken2 = (await docker.listNetworks()).flatMap((n) => (n.IPAM?.Config ?? []).map((c) => c.Subnet ?? ""));
        const second = candidateSubnets(pool, "00000000", taken2).next().value!;
        const got = await runner.networks.createOnFreeSubnet(`${NETWORK}-overlap`, { "open-persona.test": RUN }, [first, second]);
        expect(got).toBe(second);
      } finally {
        await foreign.remove();
        await docker.getNetwork(`${NETWORK}-overlap`).remove().catch(() => {});
      }
    });

    it("removes the network of a user whose container is gone, and only that one", async () => {
      const runner = sc.runner as DockerRunner;
      for (const c of await containersOf(bob)) await docker.getContainer(c.Id).remove({ force: true });
      const removed = await runner.networks.prune(async (hash) => (await docker.listContainers({ all: true, filters: { label: [`${LABEL_USER}=${hash}`] } })).length > 0, 0);
      expect(removed).toEqual([netName(bob)]);
      await expect(docker.getNetwork(netName(bob)).inspect()).rejects.toMatchObject({ statusCode: 404 });
      expect(await docker.getNetwork(netName(alice)).inspect()).toBeTruthy();
    });
  });
});

describe("runner limits (RUNNER_PIDS=200, RUNNER_MEMORY=1536m)", () => {
  let sc: InProcessSidecar;
  const alice = user("alice-limits");
  const bob = user("bob-limits");
  /** The container's cgroup v1 directory for a controller (Docker's cgroupfs layout here). */
  const cgroupFile = async (id: string, controller: string, file: string) =>
    fs.readFileSync(path.join("/sys/fs/cgroup", controller, "docker", (await containerOf(id)).Id, file), "utf8");

  beforeAll(async () => {
    sc = await startSidecar(dockerEnv({ RUNNER_PIDS: "200", RUNNER_MEMORY: "1536m" }));
    for (const id of [alice, bob]) expect((await chat(sc, id, say.text("here"))).error).toBeUndefined();
  }, 120_000);
  afterAll(async () => sc?.close());

  it("runs a fork bomb into the container's process limit while bob's chat still answers", async () => {
    const c = await containerOf(alice);
    expect(c.HostConfig.PidsLimit).toBe(200);
    const hitsBefore = Number(/max (\d+)/.exec(await cgroupFile(alice, "pids", "pids.events"))![1]);
    const marker = `bomb-${randomUUID()}`;
    // The sleeper is forked before the bomb: once it ends it stops the bomb with a builtin
    // (while the bomb runs, no fork succeeds).
    const bomb = chat(
      sc,
      alice,
      say.bash(`echo ${marker}; (sleep 12; : > /tmp/stop) & s=$!; b(){ [ -e /tmp/stop ] && return; b | b & }; (b) 2>/dev/null; wait $s; echo bomb-over`),
    );
    await new Promise((r) => setTimeout(r, 4000));
    expect((await chat(sc, bob, say.text("bob still answers"))).error).toBeUndefined();
    expect((await bomb).error).toBeUndefined();
    expect(toolOutput(marker)).toContain("bomb-over");
    expect(Number(/max (\d+)/.exec(await cgroupFile(alice, "pids", "pids.events"))![1]), "forks refused at pids.max").toBeGreaterThan(hitsBefore);
  }, 120_000);

  it("has a memory hog killed inside the container's limit; the runner and bob go on", async () => {
    const before = (await containerOf(alice)).State.StartedAt;
    const marker = `hog-${randomUUID()}`;
    // busybox tail keeps its last line in memory, and /dev/zero has no line ends.
    const turn = await chat(sc, alice, say.bash(`echo ${marker}; head -c 4294967296 /dev/zero | tail > /dev/null; echo hog-exit=$?`));
    expect(turn.error).toBeUndefined();
    expect(toolOutput(marker)).toMatch(/hog-exit=137/);
    expect(Number(/oom_kill (\d+)/.exec(await cgroupFile(alice, "memory", "memory.oom_control"))![1])).toBeGreaterThan(0);
    const after = await containerOf(alice);
    expect(after.State.Running).toBe(true);
    expect(after.State.StartedAt).toBe(before);
    expect((await chat(sc, bob, say.text("bob after the hog"))).error).toBeUndefined();
  }, 120_000);
});

describe("a runner left on the old shared network RUNNER_NETWORK", () => {
  it("is recreated on its user's own network when a sidecar starts", async () => {
    const erin = user("erin");
    const hash = userHash(erin);
    await docker.createNetwork({ Name: NETWORK, Labels: { [LABEL_MANAGED]: "true" } });
    const old = await docker.createContainer({
      name: DockerRunner.containerName(hash),
      Image: "open-persona-runner:latest",
      Entrypoint: ["/bin/sleep", "3600"],
      Labels: { [LABEL_MANAGED]: "true", [LABEL_USER]: hash },
      HostConfig: { NetworkMode: NETWORK },
    });
    await old.start();
    const sc = await startSidecar(dockerEnv());
    try {
      const recreated = () => sc.logs.map((l) => JSON.parse(l) as Record<string, unknown>).filter((r) => r.msg === "runner container recreated" && r.user === hash);
      await waitFor(() => recreated().length > 0, 60_000, "the recreation");
      expect(recreated()[0]!.reason).toMatch(/shared network/);
      const now = await containerOf(erin);
      expect(now.Id).not.toBe(old.id);
      expect(Object.keys(now.NetworkSettings.Networks)).toEqual([netName(erin)]);
      expect((await chat(sc, erin, say.text("moved"))).error).toBeUndefined();
    } finally {
      await sc.close();
      await docker.getNetwork(NETWORK).remove().catch(() => {});
    }
  }, 120_000);
});

describe("RUNNER_RUNTIME=runsc (gVisor, registered by scripts/test-setup.sh)", () => {
  it("runs the user's runner under gVisor, on its own network", async () => {
    const sc = await startSidecar(dockerEnv({ RUNNER_RUNTIME: "runsc" }));
    const dave = user("dave");
    try {
      const started = Date.now();
      expect((await chat(sc, dave, say.text("warm"))).error).toBeUndefined();
      console.log(`first turn under runsc (create + start + healthy + turn): ${Date.now() - started} ms`);
      // Debian's runsc (2022) now and then hands a bash call in a fresh sandbox back with no
      // output at all ("(no output)", docs/isolation.md): up to three calls, until one speaks.
      let out = "";
      for (let attempt = 0; attempt < 3 && !/Starting gVisor/.test(out); attempt++) {
        const marker = `gvisor-${randomUUID()}`;
        const turn = await chat(sc, dave, say.bash(`echo ${marker}; dmesg | head -n 1; id -u`));
        expect(turn.error).toBeUndefined();
        out = toolOutput(marker);
        if (!out.includes(marker)) console.log(`runsc: bash call ${attempt + 1} came back without output: ${JSON.stringify(out.slice(0, 200))}`);
      }
      const info = await containerOf(dave);
      expect(info.HostConfig.Runtime).toBe("runsc");
      expect(Object.keys(info.NetworkSettings.Networks)).toEqual([netName(dave)]);
      // gVisor's own kernel log: the agent's commands ran in the sandbox kernel, not the host's.
      expect(out).toMatch(/Starting gVisor/);
      expect(out).toMatch(/^1000$/m);
    } finally {
      await sc.close();
    }
  }, 120_000);
});
