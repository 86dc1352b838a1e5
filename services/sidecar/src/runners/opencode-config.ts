/**
 * The opencode configuration handed to every runner: the operator's own opencode config
 * (OPENCODE_CONFIG file + OPENCODE_CONFIG_CONTENT), with the sidecar's headless-safety rules
 * layered on top. Nobody can answer a permission prompt behind a chat API, and an
 * unanswered `ask` hangs the run forever, so every rule ends up `allow` or `deny`.
 */
import fs from "node:fs";

type Json = Record<string, unknown>;

/** Rules for every agent. Observed on 1.18.33: these land after opencode's agent defaults. */
const SAFETY_PERMISSION: Json = {
  edit: "allow",
  bash: "allow",
  webfetch: "allow",
  external_directory: "deny",
  question: "deny",
  doom_loop: "deny",
  plan_enter: "deny",
  plan_exit: "deny",
  // opencode asks before reading .env files by default: deny instead.
  read: { "*": "allow", "*.env": "deny", "*.env.*": "deny", "*.env.example": "allow" },
};

/**
 * The plan agent's own defaults allow `question`, `plan_exit` and bash, and agent rules come
 * after global ones: pin them here so plan can neither edit, run commands nor ask.
 */
const PLAN_PERMISSION: Json = {
  edit: "deny",
  bash: "deny",
  question: "deny",
  plan_exit: "deny",
  task: "deny",
  external_directory: "deny",
  doom_loop: "deny",
};

function isObject(v: unknown): v is Json {
  return !!v && typeof v === "object" && !Array.isArray(v);
}

export function deepMerge(base: Json, over: Json): Json {
  const out: Json = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = isObject(v) && isObject(out[k]) ? deepMerge(out[k] as Json, v) : v;
  return out;
}

/** Rewrites every `ask` in a permission value (string or pattern map) to `deny`. */
function noAsk(v: unknown): unknown {
  if (v === "ask") return "deny";
  if (isObject(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, noAsk(x)]));
  return v;
}

function readJson(label: string, text: string): Json {
  const parsed: unknown = JSON.parse(text);
  if (!isObject(parsed)) throw new Error(`${label} must hold a JSON object`);
  return parsed;
}

export interface OpencodeConfigSources {
  configFile?: string;
  configContent?: string;
}

export function buildOpencodeConfig(src: OpencodeConfigSources): Json {
  let cfg: Json = {};
  if (src.configFile) cfg = readJson(`OPENCODE_CONFIG (${src.configFile})`, fs.readFileSync(src.configFile, "utf8"));
  if (src.configContent) cfg = deepMerge(cfg, readJson("OPENCODE_CONFIG_CONTENT", src.configContent));

  const permission = noAsk(deepMerge(isObject(cfg.permission) ? cfg.permission : {}, SAFETY_PERMISSION)) as Json;
  const agents: Json = isObject(cfg.agent) ? { ...cfg.agent } : {};
  for (const [name, agent] of Object.entries(agents)) {
    if (isObject(agent) && agent.permission !== undefined) agents[name] = { ...agent, permission: noAsk(agent.permission) };
  }
  const plan = isObject(agents.plan) ? agents.plan : {};
  agents.plan = { ...plan, permission: deepMerge(isObject(plan.permission) ? plan.permission : {}, PLAN_PERMISSION) };

  return { ...cfg, permission, agent: agents, share: "disabled", autoupdate: false };
}

/** The environment for an opencode process built from the sidecar's runner environment. */
export function runnerProcessEnv(runnerEnv: Record<string, string>): Record<string, string> {
  const config = buildOpencodeConfig({
    configFile: runnerEnv.OPENCODE_CONFIG,
    configContent: runnerEnv.OPENCODE_CONFIG_CONTENT,
  });
  // The config file's content is merged in above: its path would mean nothing inside a
  // runner container.
  const { OPENCODE_CONFIG: _merged, ...rest } = runnerEnv;
  return {
    ...rest,
    OPENCODE_CONFIG_CONTENT: JSON.stringify(config),
    OPENCODE_DISABLE_AUTOUPDATE: "1",
    // The workspace is agent-writable: a project opencode.json there must not change the rules.
    OPENCODE_DISABLE_PROJECT_CONFIG: "1",
  };
}

