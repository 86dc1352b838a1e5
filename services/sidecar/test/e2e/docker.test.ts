/**
 * RUNNER_MODE=docker against a real Docker engine (scripts/test-setup.sh starts one and builds
 * the runner image). Each run uses its own network and user ids, and removes what it made.
 */
import fs from "node:fs";
import path from "node:path";
import { randomUUID } from "node:crypto";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DockerRunner, LABEL_MANAGED } from "../../src/runners/docker-runner.js";
import { userHash } from "../../src/workspace/user-space.js";
import { startOpenWebUI } from "../fixtures/openwebui-real.js";
import { say, script, scriptedOpencodeConfig, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { toolOutput as toolOutputOf } from "../fixtures/scripted-model.js";
import { startSidecar, tempDir, waitFor, type InProcessSidecar } from "../helpers/harness.js";
import { DockerTestUsers } from "../helpers/docker-users.js";
import { gatewayChat } from "../helpers/gateway-chat.js";

const docker = new Docker({ socketPath: "/var/run/docker.sock" });
const RUN = randomUUID().slice(0, 8);
const NETWORK = `op-test-${RUN}`;
const GATEWAY_KEY = `gw-${RUN}`;
const testUsers = new DockerTestUsers(docker, RUN, NETWORK);
const user = (name: string) => testUsers.user(name);

let model: ScriptedModel;
let root: string;

/** Env for a docker-mode sidecar; the model is reached as host.docker.internal. */
function dockerEnv(extra: Record<string, string> = {}): Record<string, string> {
  const config = scriptedOpencodeConfig(`http://host.docker.internal:${model.port}/v1`);
  return {
    RUNNER_MODE: "docker",
    RUNNER_NETWORK: NETWORK,
    RUNNER_MEMORY: "768m",
    RUNNER_CPUS: "1",
    RUNNER_PIDS: "256",
    RUNNER_IDLE_TIMEOUT: "0",
    WORKSPACE_ROOT: path.join(root, "workspaces"),
    STATE_ROOT: path.join(root, "state"),
    SIDECAR_API_KEYS: GATEWAY_KEY,
    OPENCODE_CONFIG_CONTENT: JSON.stringify(config),
    OPENCODE_DISABLE_MODELS_FETCH: "1",
    LOG_LEVEL: "debug",
    ...extra,
  };
}

function chat(sc: InProcessSidecar, userId: string, content: string, chatId = randomUUID()) {
  return gatewayChat(sc.url, GATEWAY_KEY, userId, content, chatId);
}

const containersOf = (userId: string) => testUsers.containersOf(userId);
const workspace = (userId: string) => path.join(root, "workspaces", userHash(userId));
const toolOutput = (marker: string) => toolOutputOf(model, marker);

beforeAll(async () => {
  await docker.ping();
  model = await startScriptedModel(0, "0.0.0.0");
  root = tempDir("op-docker-");
});

afterAll(async () => {
  await testUsers.removeAll();
  await model?.close();
});

describe("one container per user", () => {
  let sc: InProcessSidecar;
  const alice = user("alice");
  const bob = user("bob");
  const aliceChat = randomUUID();

  beforeAll(async () => {
    sc = await startSidecar(dockerEnv());
  });
  afterAll(async () => sc?.close());

  it("gives two users two containers, each writing only into its own workspace", async () => {
    expect((await chat(sc, alice, say.write("secret.txt", "alice-secret"), aliceChat)).text).toContain("wrote secret.txt");
    expect((await chat(sc, bob, say.write("secret.txt", "bob-secret"))).text).toContain("wrote secret.txt");
    expect(fs.readFileSync(path.join(workspace(alice), "secret.txt"), "utf8")).toBe("alice-secret");
    expect(fs.readFileSync(path.join(workspace(bob), "secret.txt"), "utf8")).toBe("bob-secret");
    const [a, b] = [await containersOf(alice), await containersOf(bob)];
    expect(a).toHaveLength(1);
    expect(b).toHaveLength(1);
    expect(a[0]!.Names[0]).toBe(`/open-persona-runner-${userHash(alice)}`);
    expect(a[0]!.Labels[LABEL_MANAGED]).toBe("true");
  });

  it("shows the artifacts a runner container made, from that user's workspace", async () => {
    const page = `<h1>made in the container of ${alice}</h1>`;
    const turn = await chat(sc, alice, script({ tool: "bash", args: { command: `echo '${page}' > made.html`, description: "make a page" } }, { text: "made" }));
    const embeds = turn.events.filter((e) => e.type === "embeds").flatMap((e) => e.data.embeds as string[]);
    expect(embeds).toHaveLength(1);
    expect(embeds[0]).toMatch(/\/made\.html\?embed=1$/);
    const res = await fetch(embeds[0]!.replace(/\?embed=1$/, ""));
    expect(res.status).toBe(200);
    expect(await res.text()).toBe(`${page}\n`);
    expect(fs.readFileSync(path.join(workspace(alice), "made.html"), "utf8")).toBe(`${page}\n`);
  });

  it("does not let one user's agent read another user's files, even through bash", async () => {
    const bobFile = path.join(workspace(bob), "secret.txt");
    const probe = `probe-${randomUUID()}`;
    // opencode's external_directory rule is a static check: hide the paths from it, as an
    // attacker would, so that only the container boundary stands in the way.
    const hidden = (p: string) => `$(echo ${Buffer.from(p).toString("base64")} | base64 -d)`;
    await chat(
      sc,
      alice,
      say.bash(`echo ${probe}; cat ${hidden(bobFile)}; ls ${hidden("/workspace/..")}; cat ${hidden(`/workspace/../${userHash(bob)}/secret.txt`)}`),
    );
    const out = toolOutput(probe);
    expect(out).toContain(probe);
    expect(out).not.toContain("bob-secret");
    expect(out).toMatch(/No such file/);
  });

  it("does not let one user's agent drive another user's opencode server", async () => {
    const probe = `drive-${randomUUID()}`;
    const bobRunner = `http://open-persona-runner-${userHash(bob)}:4096`;
    await chat(sc, alice, say.bash(`echo ${probe}; wget -q -O- ${bobRunner}/session 2>&1; wget -q -O- ${bobRunner}/global/health 2>&1`));
    const out = toolOutput(probe);
    expect(out).toContain(probe);
    // Bob's runner is on Bob's own network: its name does not even resolve from Alice's
    // (its address is out of reach too: docker-isolation.test.ts).
    expect(out).toMatch(/bad address/);
    expect(out).not.toMatch(/401|"healthy"/);
  });

  it("applies the limits, a non-root user and dropped capabilities", async () => {
    const [c] = await containersOf(alice);
    const info = await docker.getContainer(c!.Id).inspect();
    expect(info.Config.User).toBe("1000:1000");
    expect(info.HostConfig.Memory).toBe(768 * 1024 * 1024);
    expect(info.HostConfig.NanoCpus).toBe(1e9);
    expect(info.HostConfig.PidsLimit).toBe(256);
    expect(info.HostConfig.CapDrop).toEqual(["ALL"]);
    expect(info.HostConfig.SecurityOpt).toContain("no-new-privileges");
    expect(info.HostConfig.ReadonlyRootfs).toBe(true);
    expect(Object.keys(info.HostConfig.PortBindings ?? {})).toHaveLength(0);
    // Only the user's own workspace and data volume: never the workspace root or the socket.
    const sources = info.Mounts.map((m) => m.Source);
    expect(info.Mounts).toHaveLength(2);
    expect(sources).toContain(workspace(alice));
    expect(sources.some((s) => s.includes("docker.sock"))).toBe(false);
    expect(info.Mounts.find((m) => m.Destination === "/data")!.Name).toBe(DockerRunner.volumeName(userHash(alice)));

    // And the agent really runs that way: ask it.
    const probe = `whoami-${randomUUID()}`;
    await chat(sc, alice, say.bash(`echo ${probe}; id -u; P=/pr; grep CapEff \${P}oc/self/status`));
    const out = toolOutput(probe);
    expect(out).toMatch(/^1000$/m);
    expect(out).toMatch(/^CapEff:\s+0000000000000000$/m);
  });

  it("creates one container for concurrent first requests of a new user", async () => {
    const carol = user("carol");
    const results = await Promise.all([1, 2, 3].map(() => chat(sc, carol, say.text("hi"))));
    expect(results.map((r) => r.status)).toEqual([200, 200, 200]);
    expect(await containersOf(carol)).toHaveLength(1);
  });

  it("adopts running containers after a sidecar restart and continues the chat's session", async () => {
    const before = await containersOf(alice);
    await sc.close();
    sc = await startSidecar(dockerEnv());
    const r = await chat(sc, alice, say.countTurns(), aliceChat);
    expect(r.text).toBe("turns=2");
    const after = await containersOf(alice);
    expect(after.map((c) => c.Id)).toEqual(before.map((c) => c.Id));
  });

  it("recreates a killed or removed container on the next request, with the session intact", async () => {
    const [c] = await containersOf(alice);
    await docker.getContainer(c!.Id).kill();
    expect((await chat(sc, alice, say.countTurns(), aliceChat)).text).toBe("turns=3");

    const [again] = await containersOf(alice);
    await docker.getContainer(again!.Id).remove({ force: true });
    expect((await chat(sc, alice, say.countTurns(), aliceChat)).text).toBe("turns=4");
    const now = await containersOf(alice);
    expect(now).toHaveLength(1);
    expect(now[0]!.Id).not.toBe(again!.Id);
  });
});

describe("idle runners and missing images", () => {
  it("stops an idle runner and keeps its data", async () => {
    const sc = await startSidecar(dockerEnv({ RUNNER_IDLE_TIMEOUT: "2" }));
    const dave = user("dave");
    const chatId = randomUUID();
    try {
      await chat(sc, dave, say.write("kept.txt", "still here"), chatId);
      const [c] = await containersOf(dave);
      await waitFor(async () => !(await docker.getContainer(c!.Id).inspect()).State.Running, 20_000, "idle stop");
      expect(fs.readFileSync(path.join(workspace(dave), "kept.txt"), "utf8")).toBe("still here");
      expect(await docker.getVolume(DockerRunner.volumeName(userHash(dave))).inspect()).toBeTruthy();
      // The next request brings it back, with the chat's context.
      const back = await chat(sc, dave, say.countTurns(), chatId);
      expect(back.error).toBeUndefined();
      expect(back.text).toBe("turns=2");
    } finally {
      await sc.close();
    }
  });

  it("answers 503 with a clear message when a runner never becomes healthy", async () => {
    // An image whose server never answers: the runner image with a sleeping entrypoint.
    const tag = `open-persona-runner:mute-${RUN}`;
    const ctx = tempDir("op-mute-");
    fs.writeFileSync(path.join(ctx, "Dockerfile"), 'FROM open-persona-runner:latest\nENTRYPOINT ["/bin/sleep", "3600"]\n');
    const build = await docker.buildImage({ context: ctx, src: ["Dockerfile"] }, { t: tag });
    await new Promise((resolve, reject) => docker.modem.followProgress(build, (e) => (e ? reject(e) : resolve(null))));
    const sc = await startSidecar(dockerEnv({ RUNNER_IMAGE: tag, RUNNER_START_TIMEOUT_MS: "3000" }));
    const gina = user("gina");
    try {
      const started = Date.now();
      const r = await chat(sc, gina, say.text("hi"));
      expect(r.status).toBe(503);
      expect(r.error!.message).toMatch(/did not become ready/i);
      expect(Date.now() - started).toBeLessThan(20_000);
    } finally {
      await sc.close();
      // gina's mute runner stays up: the next sidecars must start without waiting for it.
      await docker.getImage(tag).remove({ force: true }).catch(() => {});
    }
  });

  it("answers 503 with a clear message when the runner image does not exist", async () => {
    // A runner that never gets healthy is still running (previous test): adopting it happens
    // in the background and must not hold up this sidecar's start.
    const t0 = Date.now();
    const sc = await startSidecar(dockerEnv({ RUNNER_IMAGE: `open-persona-runner:missing-${RUN}` }));
    expect(Date.now() - t0).toBeLessThan(10_000);
    try {
      const r = await chat(sc, user("erin"), say.text("hi"));
      expect(r.status).toBe(503);
      expect(r.error!.message).toMatch(/image .* not found/i);
    } finally {
      await sc.close();
    }
  });
});

describe("knowledge-base sync from runner containers", () => {
  it("attributes a container's file events to its user and syncs them into the real Open WebUI", async () => {
    const owui = await startOpenWebUI({ sidecarUrl: "http://127.0.0.1:9", gatewayKey: GATEWAY_KEY, embeddingsBaseUrl: model.baseURL });
    const frank = owui.alice;
    testUsers.track(frank.id);
    const sc = await startSidecar(dockerEnv({ OPENWEBUI_URL: owui.url, OPENWEBUI_API_KEY: owui.admin.apiKey, OPENWEBUI_SYNC_DEBOUNCE_MS: "200" }));
    try {
      await chat(sc, frank.id, say.write("from-container.txt", "synced from docker"));
      // Read back as the user sees it, with the user's own key.
      await waitFor(
        async () => {
          const kbs = await owui.api(frank.apiKey, "GET", "/api/v1/knowledge/?page=1");
          const kb = (kbs.body.items as Array<{ id: string; name: string }>).find((k) => k.name === `workspace-${frank.id}`);
          if (!kb) return false;
          const files = await owui.api(frank.apiKey, "GET", `/api/v1/knowledge/${kb.id}/files?page=1`);
          return (files.body.items as Array<{ filename: string }>).some((f) => f.filename === "from-container.txt");
        },
        30_000,
        "the file in the user's KB",
      );
    } finally {
      await sc.close();
      await owui.close();
    }
  }, 240_000);
});
