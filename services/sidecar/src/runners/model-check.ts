/**
 * At boot, says which model opencode will use and whether its provider answers — a warning
 * in the log, never fatal (the provider may come up later). Read from the operator's opencode
 * configuration, so it works in every runner mode before any runner exists.
 */
import type { Logger } from "../log/logger.js";
import { buildOpencodeConfig } from "./opencode-config.js";

export interface ModelSetup {
  /** `provider/model`, when the operator chose one. */
  model?: string;
  providerId?: string;
  /** The provider's `baseURL` from the configuration (catalogue providers have none here). */
  baseURL?: string;
}

export function modelSetup(runnerEnv: Record<string, string>): ModelSetup {
  const cfg = buildOpencodeConfig({ configFile: runnerEnv.OPENCODE_CONFIG, configContent: runnerEnv.OPENCODE_CONFIG_CONTENT });
  const model = typeof cfg.model === "string" && cfg.model ? cfg.model : undefined;
  if (!model) return {};
  const providerId = model.split("/")[0]!;
  const providers = (cfg.provider ?? {}) as Record<string, { options?: { baseURL?: unknown } }>;
  const baseURL = providers[providerId]?.options?.baseURL;
  return { model, providerId, baseURL: typeof baseURL === "string" ? baseURL : undefined };
}

/** Logs the model setup; probes the provider's URL (any HTTP answer counts as answering). */
export async function checkModel(setup: ModelSetup, log: Logger, timeoutMs = 5000): Promise<void> {
  if (!setup.model) {
    log.warn(
      'no model configured: opencode falls back to its own default provider (OpenCode Zen, on the internet); set "model" in OPENCODE_CONFIG_CONTENT (README: "Choosing a model")',
    );
    return;
  }
  if (!setup.baseURL) {
    log.info({ model: setup.model }, "model configured (its provider's URL comes from opencode's catalogue; not probed)");
    return;
  }
  const url = `${setup.baseURL.replace(/\/+$/, "")}/models`;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    await res.body?.cancel();
    log.info({ model: setup.model, url: setup.baseURL, status: res.status }, "model provider answers");
  } catch (e) {
    const cause = (e as { cause?: { code?: string } }).cause?.code ?? (e as Error).name;
    log.warn({ model: setup.model, url: setup.baseURL, err: cause }, "model provider does not answer: chats will fail until it does");
  }
}
