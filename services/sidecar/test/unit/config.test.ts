import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError, isLoopback, loadConfig } from "../../src/config/config.js";

const CWD = "/srv/persona";

function configError(env: Record<string, string>, cwd = CWD): ConfigError {
  try {
    loadConfig(env, cwd);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error(`expected a ConfigError for ${JSON.stringify(env)}`);
}

const made: string[] = [];
afterAll(() => {
  for (const d of made) fs.rmSync(d, { recursive: true, force: true });
});

function keysFile(content: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "op-config-"));
  made.push(dir);
  const file = path.join(dir, "keys.json");
  fs.writeFileSync(file, content);
  return file;
}

describe("loadConfig defaults", () => {
  it("serves loopback, local runners, with sane limits", () => {
    const c = loadConfig({}, CWD);
    expect(c).toMatchObject({
      port: 8000,
      host: "127.0.0.1",
      runnerMode: "local",
      workspaceRoot: "/srv/persona/data/workspaces",
      stateRoot: "/srv/persona/data/state",
      opencodeServerUsername: "opencode",
      logLevel: "info",
      maxConcurrentRunsPerUser: 4,
      maxBodyBytes: 20 * 1024 * 1024,
      keepAliveMs: 15_000,
      runnerStartTimeoutMs: 60_000,
      gatewayKeys: [],
    });
    expect(c.userKeys.size).toBe(0);
    expect(c.opencodeBaseUrl).toBeUndefined();
    expect(c.opencodeServerPassword).toBeUndefined();
    expect(c.openwebuiJwtSecret).toBeUndefined();
    expect(c.runnerEnv).toEqual({});
  });

  it("reads explicit values", () => {
    const c = loadConfig(
      {
        PORT: "9000",
        HOST: "0.0.0.0",
        SIDECAR_API_KEYS: " k1 , k2,,",
        RUNNER_MODE: "shared",
        OPENCODE_BASE_URL: "http://opencode:4096///",
        WORKSPACE_ROOT: "ws",
        STATE_ROOT: "/var/lib/persona",
        LOG_LEVEL: "debug",
        MAX_CONCURRENT_RUNS_PER_USER: "2",
      },
      CWD,
    );
    expect(c).toMatchObject({
      port: 9000,
      host: "0.0.0.0",
      gatewayKeys: ["k1", "k2"],
      runnerMode: "shared",
      opencodeBaseUrl: "http://opencode:4096",
      workspaceRoot: "/srv/persona/ws",
      stateRoot: "/var/lib/persona",
      logLevel: "debug",
      maxConcurrentRunsPerUser: 2,
    });
  });
});

describe("loadConfig rejects bad values, naming the variable", () => {
  it.each([
    ["PORT", { PORT: "http" }],
    ["PORT", { PORT: "-1" }],
    ["PORT", { PORT: "80.5" }],
    ["PORT", { PORT: "70000" }],
    ["RUNNER_MODE", { RUNNER_MODE: "kubernetes" }],
    ["RUNNER_MODE", { RUNNER_MODE: "Local" }],
    ["RUNNER_PLACEMENT", { RUNNER_PLACEMENT: "node.labels.x=true" }],
    ["RUNNER_PLACEMENT", { RUNNER_PLACEMENT: "node.role==manager,rm -rf /" }],
    ["RUNNER_PLACEMENT", { RUNNER_PLACEMENT: "container.name==x" }],
    ["WORKSPACE_READS", { WORKSPACE_READS: "network" }],
    ["LOG_LEVEL", { LOG_LEVEL: "verbose" }],
    ["OPENCODE_BASE_URL", { RUNNER_MODE: "shared" }],
    ["OPENCODE_BASE_URL", { OPENCODE_BASE_URL: "opencode:4096" }],
    ["OPENCODE_BASE_URL", { OPENCODE_BASE_URL: "ftp://opencode" }],
    ["OPENWEBUI_JWT_SECRET", { OPENWEBUI_JWT_SECRET: "short" }],
    ["MAX_CONCURRENT_RUNS_PER_USER", { MAX_CONCURRENT_RUNS_PER_USER: "0" }],
    ["MAX_BODY_BYTES", { MAX_BODY_BYTES: "12" }],
    ["SSE_KEEPALIVE_MS", { SSE_KEEPALIVE_MS: "soon" }],
    ["RUNNER_START_TIMEOUT_MS", { RUNNER_START_TIMEOUT_MS: "999999999" }],
    ["RUNNER_MEMORY", { RUNNER_MEMORY: "lots" }],
    ["RUNNER_MEMORY", { RUNNER_MEMORY: "1k" }],
    ["RUNNER_CPUS", { RUNNER_CPUS: "0" }],
    ["RUNNER_PIDS", { RUNNER_PIDS: "5" }],
    ["RUNNER_IDLE_TIMEOUT", { RUNNER_IDLE_TIMEOUT: "-1" }],
    ["RUNNER_USER", { RUNNER_USER: "0:0" }],
    ["RUNNER_USER", { RUNNER_USER: "opencode" }],
    ["RUNNER_SECRET", { RUNNER_SECRET: "short" }],
    ["OPENWEBUI_API_KEY", { OPENWEBUI_URL: "http://openwebui:8080" }],
    ["OPENWEBUI_URL", { OPENWEBUI_API_KEY: "sk-x" }],
    ["OPENWEBUI_URL", { OPENWEBUI_URL: "openwebui", OPENWEBUI_API_KEY: "sk-x" }],
    ["OPENWEBUI_SYNC_MAX_BYTES", { OPENWEBUI_URL: "http://o", OPENWEBUI_API_KEY: "k", OPENWEBUI_SYNC_MAX_BYTES: "big" }],
    ["OPENWEBUI_SYNC_ALLOW_HTML", { OPENWEBUI_URL: "http://o", OPENWEBUI_API_KEY: "k", OPENWEBUI_SYNC_ALLOW_HTML: "yes" }],
  ] as const)("%s in %j", (variable, env) => {
    const e = configError({ ...env });
    expect(e.variable).toBe(variable);
    expect(e.message.startsWith(`${variable}: `)).toBe(true);
  });

  it("refuses a non-loopback HOST without any keys", () => {
    for (const host of ["0.0.0.0", "192.168.1.10", "::", "persona.example.com"]) {
      const e = configError({ HOST: host });
      expect(e.variable).toBe("SIDECAR_API_KEYS");
      expect(e.message).toContain(`HOST=${host}`);
    }
    expect(() => loadConfig({ HOST: "0.0.0.0", SIDECAR_API_KEYS: "k" }, CWD)).not.toThrow();
    for (const host of ["localhost", "127.0.0.1", "127.1.2.3", "::1"]) expect(() => loadConfig({ HOST: host }, CWD)).not.toThrow();
  });

  it("isLoopback", () => {
    expect(isLoopback("127.0.0.1")).toBe(true);
    expect(isLoopback("::1")).toBe(true);
    expect(isLoopback("localhost")).toBe(true);
    expect(isLoopback("0.0.0.0")).toBe(false);
    expect(isLoopback("10.127.0.1")).toBe(false);
  });

  it("refuses STATE_ROOT inside (or equal to) WORKSPACE_ROOT", () => {
    for (const env of [
      { WORKSPACE_ROOT: "/data/ws", STATE_ROOT: "/data/ws/state" },
      { WORKSPACE_ROOT: "/data/ws", STATE_ROOT: "/data/ws" },
      { WORKSPACE_ROOT: "/data/ws/", STATE_ROOT: "/data/ws/a/../b" },
      { WORKSPACE_ROOT: "data", STATE_ROOT: "data/state" },
    ]) {
      expect(configError(env).variable).toBe("STATE_ROOT");
    }
    expect(() => loadConfig({ WORKSPACE_ROOT: "/data/ws", STATE_ROOT: "/data/ws-state" }, CWD)).not.toThrow();
    expect(() => loadConfig({ WORKSPACE_ROOT: "/data/ws", STATE_ROOT: "/data/state" }, CWD)).not.toThrow();
  });

  it("refuses a STATE_ROOT inside WORKSPACE_ROOT whose name starts with two dots", () => {
    // path.relative gives "..state", which is inside the workspace but starts with "..".
    expect(configError({ WORKSPACE_ROOT: "/data/ws", STATE_ROOT: "/data/ws/..state" }).variable).toBe("STATE_ROOT");
  });

  it("refuses roots where a user's workspace would be their state directory", () => {
    // Workspaces are WORKSPACE_ROOT/<hash> and state is STATE_ROOT/users/<hash>: with these
    // roots they are the same directory, and the agent could rewrite the sidecar's session map.
    const e = configError({ WORKSPACE_ROOT: "/data/state/users", STATE_ROOT: "/data/state" });
    expect(["STATE_ROOT", "WORKSPACE_ROOT"]).toContain(e.variable);
  });

  describe("SIDECAR_USER_KEYS_FILE", () => {
    it("reads a key → user map (which also allows a non-loopback HOST)", () => {
      const c = loadConfig({ SIDECAR_USER_KEYS_FILE: keysFile('{"sk-alice":"alice","sk-bob":"bob@example.com"}'), HOST: "0.0.0.0" }, CWD);
      expect([...c.userKeys]).toEqual([
        ["sk-alice", "alice"],
        ["sk-bob", "bob@example.com"],
      ]);
    });

    it.each([
      ["a missing file", () => "/nonexistent/keys.json"],
      ["invalid JSON", () => keysFile("{nope")],
      ["an array", () => keysFile('["sk-a"]')],
      ["a non-string user", () => keysFile('{"sk-a": 5}')],
      ["an empty user", () => keysFile('{"sk-a": ""}')],
      ["an empty key", () => keysFile('{"": "alice"}')],
      ["null", () => keysFile("null")],
    ])("rejects %s", (_what, file) => {
      expect(configError({ SIDECAR_USER_KEYS_FILE: file() }).variable).toBe("SIDECAR_USER_KEYS_FILE");
    });
  });
});

describe("runnerEnv", () => {
  const opencodeConfigFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "op-cfg-")), "opencode.json");
  fs.writeFileSync(opencodeConfigFile, '{"small_model":"x/z"}');
  /** What runners must get. */
  const forwarded = {
    OPENCODE_CONFIG_CONTENT: '{"model":"x/y"}',
    OPENCODE_CONFIG: opencodeConfigFile,
    OPENCODE_DISABLE_MODELS_FETCH: "1",
    OPENAI_API_KEY: "sk-openai",
    ANTHROPIC_API_KEY: "sk-ant",
    OPENAI_BASE_URL: "http://proxy/v1",
    AWS_REGION: "eu-west-1",
    HTTPS_PROXY: "http://proxy:3128",
  };
  const env = {
    ...forwarded,
    // Sidecar-only:
    SIDECAR_API_KEYS: "gateway-key",
    OPENWEBUI_URL: "http://openwebui:8080",
    OPENWEBUI_API_KEY: "owui-key",
    OPENWEBUI_JWT_SECRET: "0123456789abcdef0123",
    OPENCODE_SERVER_PASSWORD: "runner-password",
    OPENCODE_SERVER_USERNAME: "runner-user",
    OPENCODE_BIN: "/usr/bin/opencode",
    SIDECAR_USER_KEYS_FILE: "",
    PATH: "/usr/bin",
    HOME: "/root",
    PORT: "8000",
  };

  it("forwards opencode's own settings and provider credentials", () => {
    const { runnerEnv } = loadConfig(env, CWD);
    expect(runnerEnv).toMatchObject(forwarded);
  });

  it("does not forward the sidecar's own secrets or unrelated variables", () => {
    const { runnerEnv } = loadConfig(env, CWD);
    for (const k of [
      "SIDECAR_API_KEYS",
      "OPENWEBUI_API_KEY",
      "OPENWEBUI_JWT_SECRET",
      "OPENCODE_SERVER_PASSWORD",
      "OPENCODE_SERVER_USERNAME",
      "OPENCODE_BIN",
      "SIDECAR_USER_KEYS_FILE",
      "PATH",
      "HOME",
      "PORT",
    ]) {
      expect(runnerEnv, k).not.toHaveProperty(k);
    }
  });

  it("does not forward OPENCODE_BASE_URL (the shared runner's address is the sidecar's setting)", () => {
    const { runnerEnv } = loadConfig({ RUNNER_MODE: "shared", OPENCODE_BASE_URL: "http://opencode:4096" }, CWD);
    expect(runnerEnv).not.toHaveProperty("OPENCODE_BASE_URL");
  });
});

describe("docker runner settings", () => {
  it("parses sizes, CPUs and the idle timeout", () => {
    const c = loadConfig({ RUNNER_MODE: "docker", RUNNER_MEMORY: "1.5g", RUNNER_CPUS: "0.5", RUNNER_PIDS: "256", RUNNER_IDLE_TIMEOUT: "90" }, "/srv");
    expect(c.docker).toMatchObject({
      memoryBytes: 1.5 * 1024 ** 3,
      nanoCpus: 500_000_000,
      pidsLimit: 256,
      idleTimeoutMs: 90_000,
      image: "open-persona-runner:latest",
      network: "open-persona-runners",
      user: "1000:1000",
      workspaceHostRoot: "/srv/data/workspaces",
    });
  });

  it("keeps the runner secret away from the runners' environment", () => {
    const c = loadConfig({ RUNNER_SECRET: "s".repeat(32), OPENCODE_BASE_URL: "http://x:1", OPENCODE_SERVER_PASSWORD: "p", RUNNER_MODE: "shared" });
    expect(c.runnerEnv).not.toHaveProperty("RUNNER_SECRET");
    expect(c.runnerEnv).not.toHaveProperty("OPENCODE_BASE_URL");
    expect(c.runnerEnv).not.toHaveProperty("OPENCODE_SERVER_PASSWORD");
  });
});

describe("local runner recycling", () => {
  it("recycles above 3 GiB by default, at a chosen size, or never with 0", () => {
    expect(loadConfig({}).localMaxRssBytes).toBe(3 * 1024 ** 3);
    expect(loadConfig({ LOCAL_RUNNER_MAX_RSS: "1500m" }).localMaxRssBytes).toBe(1500 * 1024 ** 2);
    expect(loadConfig({ LOCAL_RUNNER_MAX_RSS: "0" }).localMaxRssBytes).toBeUndefined();
  });
});

describe("opencode configuration", () => {
  it("stops the boot when it is not usable, naming the variable", () => {
    expect(configError({ OPENCODE_CONFIG_CONTENT: "{not json" }).variable).toBe("OPENCODE_CONFIG_CONTENT");
    expect(configError({ OPENCODE_CONFIG_CONTENT: "[1,2]" }).variable).toBe("OPENCODE_CONFIG_CONTENT");
    expect(configError({ OPENCODE_CONFIG: "/nonexistent/opencode.json" }).variable).toBe("OPENCODE_CONFIG");
  });

  it("knows whether the operator chose a model", () => {
    expect(loadConfig({ OPENCODE_CONFIG_CONTENT: '{"model":"acme/m1"}' }).opencodeModel).toBe("acme/m1");
    expect(loadConfig({}).opencodeModel).toBeUndefined();
  });

  it("reads the turn deadlines and retry budget", () => {
    expect(loadConfig({}).turn).toEqual({ idleTimeoutMs: 300_000, maxTurnMs: 3_600_000, maxRetries: 2 });
    expect(loadConfig({ TURN_IDLE_TIMEOUT_MS: "1000", TURN_MAX_MS: "5000", AGENT_MAX_RETRIES: "0" }).turn).toEqual({ idleTimeoutMs: 1000, maxTurnMs: 5000, maxRetries: 0 });
    expect(configError({ AGENT_MAX_RETRIES: "9" }).variable).toBe("AGENT_MAX_RETRIES");
    expect(loadConfig({}).shutdownGraceMs).toBe(30_000);
  });
});

describe("secrets from files (<NAME>_FILE)", () => {
  it("reads each secret from its file, dropping one trailing newline, and forwards neither form to runners", () => {
    const config = loadConfig(
      {
        SIDECAR_API_KEYS_FILE: keysFile("gw-key-1,gw-key-2\n"),
        OPENWEBUI_JWT_SECRET_FILE: keysFile("a-jwt-secret-of-32-characters!!!\n"),
        RUNNER_SECRET_FILE: keysFile("runner-secret-0123456789"),
        OPENCODE_SERVER_PASSWORD_FILE: keysFile("oc-pass\n"),
        OPENAI_API_KEY: "sk-model",
      },
      CWD,
    );
    expect(config.gatewayKeys).toEqual(["gw-key-1", "gw-key-2"]);
    expect(config.openwebuiJwtSecret).toBe("a-jwt-secret-of-32-characters!!!");
    expect(config.docker.secret).toBe("runner-secret-0123456789");
    expect(config.opencodeServerPassword).toBe("oc-pass");
    expect(config.runnerEnv).toEqual({ OPENAI_API_KEY: "sk-model" });
  });

  it("applies the same checks as to the variable itself", () => {
    expect(configError({ RUNNER_SECRET_FILE: keysFile("short\n") }).variable).toBe("RUNNER_SECRET");
  });

  it("refuses a missing or empty file, and both forms at once", () => {
    expect(configError({ OPENWEBUI_JWT_SECRET_FILE: "/nonexistent/secret" }).message).toContain("ENOENT");
    expect(configError({ SIDECAR_API_KEYS_FILE: keysFile("\n") }).message).toContain("is empty");
    const both = configError({ SIDECAR_API_KEYS: "k", SIDECAR_API_KEYS_FILE: keysFile("k2") });
    expect(both.variable).toBe("SIDECAR_API_KEYS_FILE");
    expect(both.message).toContain("not both");
  });
});

describe("artifacts", () => {
  it("are on by default with 10 MiB, 8 per turn and 7-day links; PUBLIC_BASE_URL loses its trailing slash", () => {
    const config = loadConfig({ PUBLIC_BASE_URL: "https://persona.example.com/" }, CWD);
    expect(config.artifacts).toEqual({ maxBytes: 10 * 1024 * 1024, maxPerTurn: 8, urlTtlS: 7 * 86_400, signingKey: undefined });
    expect(config.publicBaseUrl).toBe("https://persona.example.com");
    expect(loadConfig({ ARTIFACTS: "off" }, CWD).artifacts).toBeUndefined();
  });

  it("reads the signing key from a file, never hands it to a runner, and refuses bad values", () => {
    const config = loadConfig({ ARTIFACT_SIGNING_KEY_FILE: keysFile("a-signing-key-of-some-length\n"), OPENAI_API_KEY: "sk-model" }, CWD);
    expect(config.artifacts!.signingKey).toBe("a-signing-key-of-some-length");
    expect(config.runnerEnv).toEqual({ OPENAI_API_KEY: "sk-model" });
    expect(configError({ ARTIFACT_SIGNING_KEY: "short" }).variable).toBe("ARTIFACT_SIGNING_KEY");
    expect(configError({ PUBLIC_BASE_URL: "persona.example.com" }).variable).toBe("PUBLIC_BASE_URL");
    expect(configError({ ARTIFACTS_MAX_PER_TURN: "0" }).variable).toBe("ARTIFACTS_MAX_PER_TURN");
    expect(configError({ ARTIFACT_URL_TTL_S: "10" }).variable).toBe("ARTIFACT_URL_TTL_S");
    expect(configError({ ARTIFACTS: "yes" }).variable).toBe("ARTIFACTS");
  });
});

describe("swarm runner settings", () => {
  it("takes docker mode's runner spec, the overlay network name and the placement constraints", () => {
    const c = loadConfig({ RUNNER_MODE: "swarm", RUNNER_NETWORK: "op-overlay", RUNNER_PLACEMENT: " node.labels.open-persona.runners==true , node.role!=manager ", RUNNER_MEMORY: "2g" }, "/srv");
    expect(c.runnerMode).toBe("swarm");
    expect(c.swarm.placement).toEqual(["node.labels.open-persona.runners==true", "node.role!=manager"]);
    expect(c.docker).toMatchObject({ network: "op-overlay", memoryBytes: 2 * 1024 ** 3 });
    expect(c.workspaceReads).toBe("auto");
    expect(loadConfig({ RUNNER_MODE: "swarm" }, "/srv").swarm.placement).toEqual([]);
    expect(loadConfig({ WORKSPACE_READS: "runner" }, "/srv").workspaceReads).toBe("runner");
  });
});

describe("DATABASE_URL", () => {
  it("is taken in shared and docker mode, and refused in local mode (each replica would run its own opencode)", () => {
    const url = "postgresql://persona:s3cret@db:5432/persona";
    expect(loadConfig({ DATABASE_URL: url, RUNNER_MODE: "docker" }, CWD).database).toEqual({ url, poolMax: 100, connectWithinMs: 60_000 });
    expect(loadConfig({ DATABASE_URL: url, RUNNER_MODE: "shared", OPENCODE_BASE_URL: "http://oc:4096", DATABASE_POOL_MAX: "20" }, CWD).database).toEqual({ url, poolMax: 20, connectWithinMs: 60_000 });
    const local = configError({ DATABASE_URL: url });
    expect(local.variable).toBe("DATABASE_URL");
    expect(local.message).toMatch(/RUNNER_MODE=shared, docker or swarm/);
    expect(loadConfig({}, CWD).database).toBeUndefined();
  });

  it("refuses what is not a postgres URL without echoing it (it holds a password), and never hands it to a runner", () => {
    const bad = configError({ DATABASE_URL: "mysql://u:hunter2@db/x", RUNNER_MODE: "docker" });
    expect(bad.variable).toBe("DATABASE_URL");
    expect(bad.message).not.toContain("hunter2");
    const config = loadConfig({ DATABASE_URL: "postgres://u:p@db/x", RUNNER_MODE: "docker", OPENAI_API_KEY: "sk-model" }, CWD);
    expect(config.runnerEnv).toEqual({ OPENAI_API_KEY: "sk-model" });
  });
});
