import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { buildOpencodeConfig, deepMerge, runnerProcessEnv } from "../../src/runners/opencode-config.js";

type Json = Record<string, any>;

/** Every string value anywhere under a permission value. */
function actions(v: unknown): string[] {
  if (typeof v === "string") return [v];
  if (v && typeof v === "object") return Object.values(v).flatMap(actions);
  return [];
}

const operator: Json = {
  $schema: "https://opencode.ai/config.json",
  model: "anthropic/claude-x",
  small_model: "anthropic/claude-mini",
  provider: { anthropic: { options: { apiKey: "{env:ANTHROPIC_API_KEY}" } } },
  instructions: ["AGENTS.md"],
  permission: {
    edit: "ask",
    bash: { "git push *": "ask", "rm *": "deny", "*": "allow" },
    webfetch: "deny",
    grep: "ask",
    list: "allow",
    skill: { "*": "ask", "safe-*": { nested: "ask" } },
    external_directory: "allow",
  },
  agent: {
    build: { model: "anthropic/claude-x", permission: { bash: { "*": "ask", "ls *": "allow" }, edit: "ask", todowrite: "allow" } },
    review: { description: "reviews", prompt: "be strict", permission: "ask" },
    docs: { description: "no permission key" },
    plan: { temperature: 0.1, permission: { edit: "allow", bash: "allow", read: "ask", webfetch: "ask" } },
  },
  share: "auto",
  autoupdate: true,
};

describe("buildOpencodeConfig", () => {
  const cfg = buildOpencodeConfig({ configContent: JSON.stringify(operator) }) as Json;

  it("leaves no ask anywhere, globally or per agent", () => {
    expect(actions(cfg.permission)).not.toContain("ask");
    for (const agent of Object.values(cfg.agent as Json)) expect(actions((agent as Json).permission)).not.toContain("ask");
    expect(JSON.stringify(cfg)).not.toContain('"ask"');
  });

  it("turns each ask into deny, in nested pattern maps too", () => {
    expect(cfg.permission.grep).toBe("deny");
    expect(cfg.permission.skill).toEqual({ "*": "deny", "safe-*": { nested: "deny" } });
    expect(cfg.agent.build.permission).toEqual({ bash: { "*": "deny", "ls *": "allow" }, edit: "deny", todowrite: "allow" });
    expect(cfg.agent.review.permission).toBe("deny");
  });

  it("layers the safety rules over the operator's", () => {
    expect(cfg.permission).toMatchObject({
      edit: "allow",
      bash: "allow",
      webfetch: "allow",
      external_directory: "deny",
      question: "deny",
      doom_loop: "deny",
      plan_enter: "deny",
      plan_exit: "deny",
      read: { "*": "allow", "*.env": "deny", "*.env.*": "deny", "*.env.example": "allow" },
    });
    expect(cfg.share).toBe("disabled");
    expect(cfg.autoupdate).toBe(false);
  });

  it("keeps the operator's other settings", () => {
    expect(cfg.model).toBe("anthropic/claude-x");
    expect(cfg.small_model).toBe("anthropic/claude-mini");
    expect(cfg.provider).toEqual(operator.provider);
    expect(cfg.instructions).toEqual(["AGENTS.md"]);
    expect(cfg.$schema).toBe(operator.$schema);
    expect(cfg.permission.list).toBe("allow");
    expect(cfg.agent.build.model).toBe("anthropic/claude-x");
    expect(cfg.agent.review).toMatchObject({ description: "reviews", prompt: "be strict" });
    expect(cfg.agent.docs).toEqual({ description: "no permission key" });
    expect(cfg.agent.plan.temperature).toBe(0.1);
  });

  it("pins the plan agent to read-only", () => {
    expect(cfg.agent.plan.permission).toMatchObject({
      edit: "deny",
      bash: "deny",
      question: "deny",
      plan_exit: "deny",
      task: "deny",
      external_directory: "deny",
      doom_loop: "deny",
    });
    expect(cfg.agent.plan.permission.read).toBe("deny"); // the operator's ask, as deny
    expect(cfg.agent.plan.permission.webfetch).toBe("deny");
  });

  it("adds a plan agent when the operator has none", () => {
    const bare = buildOpencodeConfig({}) as Json;
    expect(bare.agent.plan.permission).toMatchObject({ edit: "deny", bash: "deny" });
    expect(bare.permission.bash).toBe("allow");
    expect(bare.share).toBe("disabled");
  });

  it("does not modify the operator's input", () => {
    const input = structuredClone(operator);
    buildOpencodeConfig({ configContent: JSON.stringify(input) });
    expect(input).toEqual(operator);
  });

  it("reads OPENCODE_CONFIG and lets OPENCODE_CONFIG_CONTENT override it", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "op-occfg-"));
    const file = path.join(dir, "opencode.json");
    fs.writeFileSync(file, JSON.stringify({ model: "a/file", theme: "dark", agent: { build: { permission: { edit: "ask" } } } }));
    const cfg = buildOpencodeConfig({ configFile: file, configContent: JSON.stringify({ model: "a/content" }) }) as Json;
    fs.rmSync(dir, { recursive: true, force: true });
    expect(cfg.model).toBe("a/content");
    expect(cfg.theme).toBe("dark");
    expect(cfg.agent.build.permission.edit).toBe("deny");
  });

  it("rejects configs that are not JSON objects", () => {
    expect(() => buildOpencodeConfig({ configContent: "[1]" })).toThrow(/OPENCODE_CONFIG_CONTENT/);
    expect(() => buildOpencodeConfig({ configContent: "{nope" })).toThrow();
  });
});

describe("deepMerge", () => {
  it("merges objects recursively; scalars and arrays replace", () => {
    expect(deepMerge({ a: { x: 1, y: [1] }, b: 1 }, { a: { y: [2], z: 3 }, b: { c: 1 } })).toEqual({ a: { x: 1, y: [2], z: 3 }, b: { c: 1 } });
  });
});

describe("runnerProcessEnv", () => {
  it("hands the runner the safe config and keeps the rest of its environment", () => {
    const env = runnerProcessEnv({ OPENCODE_CONFIG_CONTENT: JSON.stringify({ model: "x/y", permission: { bash: "ask" } }), OPENAI_API_KEY: "sk" });
    const cfg = JSON.parse(env.OPENCODE_CONFIG_CONTENT!) as Json;
    expect(cfg.model).toBe("x/y");
    expect(cfg.permission.bash).toBe("allow");
    expect(env).toMatchObject({ OPENAI_API_KEY: "sk", OPENCODE_DISABLE_AUTOUPDATE: "1", OPENCODE_DISABLE_PROJECT_CONFIG: "1" });
  });

  it("merges an OPENCODE_CONFIG file into the content and does not pass its path on", () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "op-cfg-")), "opencode.json");
    fs.writeFileSync(file, JSON.stringify({ model: "from/file", permission: { webfetch: "ask" } }));
    const env = runnerProcessEnv({ OPENCODE_CONFIG: file, OPENCODE_CONFIG_CONTENT: JSON.stringify({ small_model: "from/content" }) });
    const cfg = JSON.parse(env.OPENCODE_CONFIG_CONTENT!) as Json;
    expect(cfg).toMatchObject({ model: "from/file", small_model: "from/content" });
    expect(cfg.permission.webfetch).toBe("allow");
    expect(env.OPENCODE_CONFIG).toBeUndefined();
  });
});
