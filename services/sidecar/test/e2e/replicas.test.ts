/**
 * Several sidecar replicas sharing their state in PostgreSQL (DATABASE_URL), behind a
 * round-robin proxy: over one real `opencode serve` (RUNNER_MODE=shared), and over runner
 * containers on the real Docker engine (RUNNER_MODE=docker). Each replica has its own
 * STATE_ROOT: whatever they agree on, they agree on through the database.
 */
import { randomUUID } from "node:crypto";
import path from "node:path";
import Docker from "dockerode";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { userHash } from "../../src/workspace/user-space.js";
import { startOpencodeServer, type OpencodeServer } from "../fixtures/opencode-server.js";
import { createTestDatabase, type TestDatabase } from "../fixtures/postgres.js";
import { say, scriptedOpencodeConfig, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { DockerTestUsers } from "../helpers/docker-users.js";
import { gatewayChat } from "../helpers/gateway-chat.js";
import { spawnSidecar, tempDir, waitFor, type ChildSidecar } from "../helpers/harness.js";
import { startRoundRobinProxy, type RoundRobinProxy } from "../helpers/round-robin-proxy.js";

const GATEWAY_KEY = `gw-${randomUUID()}`;
const CAP = 3;
const IDLE_S = 4;

let model: ScriptedModel;
let root: string;

beforeAll(async () => {
  // Reached by the shared opencode on the host and by runner containers (host.docker.internal).
  model = await startScriptedModel(0, "0.0.0.0");
  root = tempDir("op-replicas-");
});

afterAll(async () => {
  await model?.close();
});

const chat = (url: string, user: string, content: string, chatId: string = randomUUID()) => gatewayChat(url, GATEWAY_KEY, user, content, chatId);
const sdkOf = (url: string, user: string) => new OpenAI({ baseURL: `${url}/v1`, apiKey: GATEWAY_KEY, defaultHeaders: { "X-OpenWebUI-User-Id": user }, maxRetries: 0 });
const sessionsOfIn = async (db: TestDatabase, user: string, chatKey: string) =>
  (await db.query<{ session_id: string }>("SELECT session_id FROM chat_sessions WHERE user_hash = $1 AND chat_key = $2", [userHash(user), chatKey])).rows;

/**
 * Two replicas in `mode` on `db`, started together (the schema is migrated once, whoever is
 * first), behind a proxy: one workspace tree (what the runners see), a state directory each.
 */
async function startReplicas(mode: "shared" | "docker", db: TestDatabase, extra: Record<string, string>) {
  const replicas = await Promise.all(
    [0, 1].map((i) =>
      spawnSidecar({
        RUNNER_MODE: mode,
        DATABASE_URL: db.url,
        SIDECAR_API_KEYS: GATEWAY_KEY,
        MAX_CONCURRENT_RUNS_PER_USER: String(CAP),
        WORKSPACE_ROOT: path.join(root, `${mode}-workspaces`),
        STATE_ROOT: path.join(root, `${mode}-state-${i}`),
        LOG_LEVEL: "debug",
        ...extra,
      }),
    ),
  );
  const proxy = await startRoundRobinProxy(() => replicas.map((r) => r.url));
  return { replicas, proxy };
}

describe("replicas sharing PostgreSQL, shared mode", () => {
  let opencode: OpencodeServer;
  let db: TestDatabase;
  let replicas: ChildSidecar[];
  let proxy: RoundRobinProxy;
  const sessionsOf = (user: string, chatKey: string) => sessionsOfIn(db, user, chatKey);

  beforeAll(async () => {
    [opencode, db] = await Promise.all([startOpencodeServer(model.baseURL), createTestDatabase()]);
    ({ replicas, proxy } = await startReplicas("shared", db, { OPENCODE_BASE_URL: opencode.url, OPENCODE_SERVER_PASSWORD: opencode.password }));
  }, 120_000);

  afterAll(async () => {
    await proxy?.close();
    await Promise.all((replicas ?? []).map((r) => r.stop()));
    await opencode?.close();
    await db?.drop();
  });

  it("keeps one session for a chat whose messages alternate between replicas", async () => {
    const user = `alice-${randomUUID().slice(0, 8)}`;
    const chatId = randomUUID();
    const from = proxy.served.length;
    const answers: string[] = [];
    for (let i = 0; i < 4; i++) answers.push((await chat(proxy.url, user, say.countTurns(), chatId)).text);
    // The model saw the whole conversation every time: one session, whichever replica served.
    expect(answers).toEqual(["turns=1", "turns=2", "turns=3", "turns=4"]);
    expect(proxy.served.slice(from)).toEqual([0, 1, 0, 1]);
    expect(await sessionsOf(user, chatId)).toHaveLength(1);
  }, 120_000);

  it("creates one session for concurrent first requests through different replicas", async () => {
    const user = `bob-${randomUUID().slice(0, 8)}`;
    const chatId = randomUUID();
    const turns = await Promise.all(Array.from({ length: CAP }, () => chat(proxy.url, user, say.text("hello"), chatId)));
    expect(turns.map((t) => t.status)).toEqual(Array(CAP).fill(200));
    expect(turns.map((t) => t.text)).toEqual(Array(CAP).fill("hello"));
    expect(await sessionsOf(user, chatId)).toHaveLength(1);
    // The turns ran one after another in that one session (never merged): the next one sees them all.
    expect((await chat(proxy.url, user, say.countTurns(), chatId)).text).toBe(`turns=${CAP + 1}`);
  }, 120_000);

  it("holds the per-user cap across replicas", async () => {
    const user = `carol-${randomUUID().slice(0, 8)}`;
    const turns = await Promise.all(Array.from({ length: CAP + 3 }, () => chat(proxy.url, user, say.slow(20, 100), randomUUID())));
    const statuses = turns.map((t) => t.status).sort();
    expect(statuses).toEqual([...Array(CAP).fill(200), ...Array(3).fill(429)]);
    // Both replicas refused some: the cap is the user's, not a replica's.
    expect(turns.filter((t) => t.status === 429).every((t) => /Too many concurrent chats/.test(t.error!.message))).toBe(true);
    // All slots are back.
    const again = await Promise.all(Array.from({ length: CAP }, () => chat(proxy.url, user, say.text("ok"), randomUUID())));
    expect(again.map((t) => t.status)).toEqual(Array(CAP).fill(200));
  }, 120_000);

  it("continues a response's chat from another replica (previous_response_id)", async () => {
    const user = `frank-${randomUUID().slice(0, 8)}`;
    const respond = async (url: string, previous?: string) => {
      const res = await fetch(`${url}/v1/responses`, {
        method: "POST",
        headers: { Authorization: `Bearer ${GATEWAY_KEY}`, "Content-Type": "application/json", "X-OpenWebUI-User-Id": user },
        body: JSON.stringify({ model: "open-persona/build", input: say.countTurns(), ...(previous ? { previous_response_id: previous } : {}) }),
      });
      expect(res.status).toBe(200);
      return (await res.json()) as { id: string; output: Array<{ type: string; content?: Array<{ text: string }> }> };
    };
    const text = (r: Awaited<ReturnType<typeof respond>>) => r.output.find((o) => o.type === "message")!.content![0]!.text;
    const first = await respond(replicas[0]!.url);
    const second = await respond(replicas[1]!.url, first.id);
    const third = await respond(replicas[0]!.url, second.id);
    expect([first, second, third].map(text)).toEqual(["turns=1", "turns=2", "turns=3"]);
  }, 120_000);

  it("retrieves a background response started on one replica from another, and follows its events live", async () => {
    const user = `hana-${randomUUID().slice(0, 8)}`;
    const [one, two] = replicas.map((r) => sdkOf(r.url, user)) as [OpenAI, OpenAI];
    const started = await one.responses.create({ model: "open-persona/build", input: say.slow(20, 150), background: true });
    expect(started.status).toBe("in_progress");
    // The other replica knows it while it runs, and streams it from sequence number 1 on, as it comes.
    expect((await two.responses.retrieve(started.id)).status).toBe("in_progress");
    const seen: number[] = [];
    const statusAtFirstDelta: string[] = [];
    let text = "";
    for await (const e of await two.responses.retrieve(started.id, { stream: true, starting_after: 1 })) {
      seen.push(e.sequence_number);
      if (e.type === "response.output_text.delta") {
        if (!text) statusAtFirstDelta.push(String((await one.responses.retrieve(started.id)).status));
        text += e.delta;
      }
    }
    expect(statusAtFirstDelta).toEqual(["in_progress"]);
    expect(seen).toEqual(seen.map((_, i) => i + 2));
    expect(text).toBe("tok ".repeat(20));
    const [fromOne, fromTwo] = await Promise.all([one.responses.retrieve(started.id), two.responses.retrieve(started.id)]);
    expect(fromTwo.status).toBe("completed");
    expect(fromTwo).toEqual(fromOne);
    // Another user asking either replica: unknown.
    const stranger = sdkOf(replicas[1]!.url, `ivan-${randomUUID().slice(0, 8)}`);
    expect(await stranger.responses.retrieve(started.id).catch((e: unknown) => e)).toBeInstanceOf(OpenAI.NotFoundError);
  }, 120_000);

  it("cancels a background response from the replica that does not run it", async () => {
    const user = `jade-${randomUUID().slice(0, 8)}`;
    const [one, two] = replicas.map((r) => sdkOf(r.url, user)) as [OpenAI, OpenAI];
    const slow = say.slow(200, 100);
    const started = await one.responses.create({ model: "open-persona/build", input: slow, background: true });
    // Cancelled once the model has streamed for a second (a fixed wait from the start was too
    // short on a loaded machine: the model had not been asked yet, so there was no text).
    await waitFor(() => model.requests.some((r) => r.lastUserText.includes(slow)), 30_000, "the model asked");
    await new Promise((r) => setTimeout(r, 1000));
    const asked = Date.now();
    const cancelled = await two.responses.cancel(started.id);
    expect(cancelled.status).toBe("cancelled");
    expect(Date.now() - asked).toBeLessThan(10_000);
    expect((await one.responses.retrieve(started.id)).status).toBe("cancelled");
    const text = cancelled.output.flatMap((i) => (i.type === "message" ? i.content.map((c) => (c.type === "output_text" ? c.text : "")) : [])).join("");
    expect(text.length).toBeGreaterThan(0);
    expect(text.length).toBeLessThan("tok ".repeat(200).length);
  }, 120_000);

  it("serves an artifact link made on one replica from the other (versions and signing key in the database)", async () => {
    const user = `kim-${randomUUID().slice(0, 8)}`;
    const page = `<h1>made on replica 0 ${randomUUID()}</h1>`;
    const turn = await chat(replicas[0]!.url, user, say.write("page.html", page));
    expect(turn.status).toBe(200);
    const link = JSON.stringify(turn).match(/\/v1\/artifacts\/[A-Za-z0-9_.-]+\/page\.html/)?.[0];
    expect(link).toBeDefined();
    // Each replica has its own STATE_ROOT: only the database can have the version and the key.
    const res = await fetch(`${replicas[1]!.url}${link}`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/html/);
    expect(await res.text()).toBe(page);
  }, 120_000);

  it("answers 503 database_unavailable while the database refuses connections, and goes on where it was after", async () => {
    const user = `gina-${randomUUID().slice(0, 8)}`;
    const chatId = randomUUID();
    expect((await chat(proxy.url, user, say.countTurns(), chatId)).text).toBe("turns=1");
    await db.acceptConnections(false);
    try {
      for (const r of replicas) {
        const down = await chat(r.url, user, say.countTurns(), randomUUID());
        expect(down.status).toBe(503);
        expect(down.error!.message).toMatch(/database is unavailable/);
      }
    } finally {
      await db.acceptConnections(true);
    }
    // Nothing was lost or half-written: the chat goes on in its session.
    expect((await chat(proxy.url, user, say.countTurns(), chatId)).text).toBe("turns=2");
  }, 120_000);

  it("stops a turn whose lock connection is lost (the lock went with it): its client gets a 503 error at once, and the chat goes on", async () => {
    const user = `lena-${randomUUID().slice(0, 8)}`;
    const chatId = randomUUID();
    const res = await fetch(`${replicas[0]!.url}/v1/chat/completions`, {
      method: "POST",
      headers: { Authorization: `Bearer ${GATEWAY_KEY}`, "Content-Type": "application/json", "X-OpenWebUI-User-Id": user, "X-OpenWebUI-Chat-Id": chatId },
      body: JSON.stringify({ model: "open-persona/build", stream: true, messages: [{ role: "user", content: say.slow(200, 100) }] }),
    });
    const reader = res.body!.getReader();
    let body = "";
    // The model is streaming: the turn holds its lock.
    while (!body.includes("tok")) body += new TextDecoder().decode((await reader.read()).value);
    // The connection holding the session's turn lock dies (as when PostgreSQL restarts or a proxy cuts it).
    const killed = await db.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
       AND query LIKE 'SELECT pg_try_advisory_lock(hashtextextended%' AND pg_terminate_backend(pid)`,
    );
    expect(killed.rows).toHaveLength(1);
    const cut = Date.now();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      body += new TextDecoder().decode(value);
    }
    expect(Date.now() - cut).toBeLessThan(5000);
    expect(body).toMatch(/lost its database connection/);
    expect(body).toMatch(/database_unavailable/);
    expect(body).not.toContain("tok ".repeat(200));
    // Nothing stays taken: the chat goes on in its session.
    expect((await chat(proxy.url, user, say.countTurns(), chatId)).text).toBe("turns=2");
  }, 120_000);

  it("survives a replica killed mid-turn: the next request succeeds on another, with no lock or slot left taken", async () => {
    const user = `dave-${randomUUID().slice(0, 8)}`;
    const chatId = randomUUID();
    const [victim, survivor] = replicas as [ChildSidecar, ChildSidecar];
    // A long turn on the victim: its session lock and one of the user's slots are taken.
    const res = await fetch(`${victim.url}/v1/chat/completions`, {
      method: "POST",
      headers: { Authorization: `Bearer ${GATEWAY_KEY}`, "Content-Type": "application/json", "X-OpenWebUI-User-Id": user, "X-OpenWebUI-Chat-Id": chatId },
      body: JSON.stringify({ model: "open-persona/build", stream: true, messages: [{ role: "user", content: say.slow(200, 100) }] }),
    });
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toContain("data:");
    // And a background response it runs.
    const orphan = await sdkOf(victim.url, user).responses.create({ model: "open-persona/build", input: say.slow(200, 100), background: true });
    const following = sdkOf(survivor.url, user).responses.retrieve(orphan.id, { stream: true });
    await victim.stop("SIGKILL");
    // Its client sees the stream end or break at once (never a hang).
    const ended = (async () => {
      for (;;) if ((await reader.read()).done) return "ended";
    })().catch((e: Error) => `broken: ${e.message}`);
    expect(await Promise.race([ended, new Promise((r) => setTimeout(() => r("still open"), 5000))])).toMatch(/^(ended|broken)/);

    const started = Date.now();
    const next = await chat(survivor.url, user, say.countTurns(), chatId);
    expect(next.status).toBe(200);
    // The same session (the killed turn's message is in it), without waiting out the orphaned run.
    expect(next.text).toBe("turns=2");
    expect(Date.now() - started).toBeLessThan(15_000);
    const all = await Promise.all(Array.from({ length: CAP }, () => chat(survivor.url, user, say.text("free"), randomUUID())));
    expect(all.map((t) => t.status)).toEqual(Array(CAP).fill(200));
    expect(survivor.logs.some((l) => /orphaned run/.test(l))).toBe(true);
    // The background response died with its replica: said so at once, on the survivor, to a follower too.
    const after = await sdkOf(survivor.url, user).responses.retrieve(orphan.id);
    expect(after.status).toBe("failed");
    expect(after.error?.code).toBe("sidecar_restarted");
    const types: string[] = [];
    for await (const e of await following) types.push(e.type);
    expect(types[0]).toBe("response.created");
    expect(types.at(-1)).toBe("response.failed");
  }, 120_000);
});

describe("replicas sharing PostgreSQL, docker mode", () => {
  const docker = new Docker({ socketPath: "/var/run/docker.sock" });
  const run = randomUUID().slice(0, 8);
  const network = `op-rep-${run}`;
  const users = new DockerTestUsers(docker, run, network);
  let db: TestDatabase;
  let replicas: ChildSidecar[];
  let proxy: RoundRobinProxy;

  beforeAll(async () => {
    db = await createTestDatabase();
    // No RUNNER_SECRET: the replicas share the one the first of them made in the database (a
    // runner's password must be the same whichever replica made it).
    ({ replicas, proxy } = await startReplicas("docker", db, {
      RUNNER_NETWORK: network,
      RUNNER_MEMORY: "768m",
      RUNNER_CPUS: "1",
      // Short, so that a reaper round falls between one replica's turns within the test.
      RUNNER_IDLE_TIMEOUT: String(IDLE_S),
      OPENCODE_CONFIG_CONTENT: JSON.stringify(scriptedOpencodeConfig(`http://host.docker.internal:${model.port}/v1`)),
      OPENCODE_DISABLE_MODELS_FETCH: "1",
    }));
  }, 120_000);

  afterAll(async () => {
    await proxy?.close();
    await Promise.all((replicas ?? []).map((r) => r.stop()));
    await users.removeAll();
    await db?.drop();
  });

  it("concurrent first requests through different replicas make one runner container and one session", async () => {
    const user = users.user("erin");
    const chatId = randomUUID();
    const turns = await Promise.all(Array.from({ length: CAP }, () => chat(proxy.url, user, say.text("hello"), chatId)));
    expect(turns.map((t) => [t.status, t.text])).toEqual(Array(CAP).fill([200, "hello"]));
    expect(await users.containersOf(user)).toHaveLength(1);
    expect(await sessionsOfIn(db, user, chatId)).toHaveLength(1);
    // And the chat goes on in that session from either replica.
    const next = [await chat(proxy.url, user, say.countTurns(), chatId), await chat(proxy.url, user, say.countTurns(), chatId)];
    expect(next.map((t) => t.text)).toEqual([`turns=${CAP + 1}`, `turns=${CAP + 2}`]);
    expect(await users.containersOf(user)).toHaveLength(1);
  }, 180_000);

  it("never lets one replica's idle reaper stop a runner another replica is using, and stops it once nobody is", async () => {
    const user = users.user("hank");
    const chatId = randomUUID();
    const [r0, r1] = replicas as [ChildSidecar, ChildSidecar];
    // Both replicas know the runner.
    expect((await chat(r1.url, user, say.text("one"), chatId)).status).toBe(200);
    expect((await chat(r0.url, user, say.text("two"), chatId)).status).toBe(200);
    const [container] = await users.containersOf(user);
    // From now on only replica 1 uses it: replica 0's own last use grows far past the idle
    // timeout, and between replica 1's turns opencode looks idle.
    const until = Date.now() + 3 * IDLE_S * 1000;
    while (Date.now() < until) {
      expect((await chat(r1.url, user, say.text("still here"), chatId)).status).toBe(200);
      await new Promise((r) => setTimeout(r, 1500));
    }
    expect((await users.containersOf(user)).map((c) => [c.Id, c.State])).toEqual([[container!.Id, "running"]]);
    expect(r0.logs.some((l) => /stopped idle runner/.test(l) && l.includes(userHash(user)))).toBe(false);
    // Nobody uses it any more: stopped after the timeout (data kept).
    await waitFor(async () => (await users.containersOf(user))[0]?.State === "exited", 30_000, "the idle runner to be stopped");
  }, 180_000);
});
