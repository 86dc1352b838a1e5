/**
 * The knowledge-base contract (test/contract/openwebui-kb.contract.ts) against the real Open
 * WebUI, the same suite the contract double runs in test/unit/openwebui-double.test.ts. When
 * this passes and the double's run fails, fix the double: the real one is right.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { describeOpenWebUIKnowledgeContract } from "../contract/openwebui-kb.contract.js";
import { startOpenWebUI, type RealOpenWebUI } from "../fixtures/openwebui-real.js";
import { startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";

let model: ScriptedModel;
let owui: RealOpenWebUI;

beforeAll(async () => {
  // Nothing here chats: the scripted model only serves the embeddings KBs need.
  model = await startScriptedModel();
  owui = await startOpenWebUI({ sidecarUrl: model.baseURL.replace(/\/v1$/, ""), gatewayKey: "sk-unused", embeddingsBaseUrl: model.baseURL });
}, 180_000); // 20–45 s to start, more on a loaded machine
afterAll(async () => {
  await owui?.close();
  await model?.close();
});

describe("the real Open WebUI", () => {
  it("is the release the double's current dialect mirrors", () => {
    // Upgrading the pin? Run this suite, then fix the double until its run passes too.
    expect(owui.version).toBe("0.12.4");
  });

  describeOpenWebUIKnowledgeContract("the contract shared with the double", () => ({
    url: owui.url,
    version: owui.version,
    admin: owui.admin,
    alice: owui.alice,
    bob: owui.bob,
  }));
});
