/**
 * `POST /v1/responses` end to end with the official `openai` client (its Responses API and
 * stream helper) → sidecar → real opencode → the scripted model.
 */
import { randomUUID } from "node:crypto";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { say, script, startScriptedModel, type ScriptedModel } from "../fixtures/scripted-model.js";
import { scriptedEnv, startSidecar, type InProcessSidecar } from "../helpers/harness.js";

let model: ScriptedModel;
let sidecar: InProcessSidecar;
let client: OpenAI;

beforeAll(async () => {
  model = await startScriptedModel();
  sidecar = await startSidecar(scriptedEnv(model.baseURL));
  client = new OpenAI({ baseURL: `${sidecar.url}/v1`, apiKey: "unused-on-loopback" });
});
afterAll(async () => {
  await sidecar?.close();
  await model?.close();
});

describe("responses.create", () => {
  it("answers whole: a message with output_text, the tool run as an mcp_call item, real usage", async () => {
    const r = await client.responses.create({ model: "open-persona/build", input: say.write("r.txt", "from responses", "wrote it") });
    expect(r.object).toBe("response");
    expect(r.status).toBe("completed");
    expect(r.output_text).toBe("wrote it");
    const call = r.output.find((i) => i.type === "mcp_call");
    expect(call).toMatchObject({ type: "mcp_call", name: "write", status: "completed", server_label: "opencode" });
    expect(JSON.parse((call as { arguments: string }).arguments)).toMatchObject({ content: "from responses" });
    expect(r.output.some((i) => i.type === ("function_call" as string))).toBe(false);
    expect(r.usage!.input_tokens).toBeGreaterThan(0);
    expect(r.usage!.total_tokens).toBe(r.usage!.input_tokens + r.usage!.output_tokens);
  });

  it("streams the events the SDK's helper expects, in order, with sequence numbers; reasoning as a reasoning item", async () => {
    const stream = client.responses.stream({ model: "open-persona/build", input: script({ reasoning: "let me think", text: "streamed answer" }) });
    const types: string[] = [];
    const seqs: number[] = [];
    let text = "";
    for await (const e of stream) {
      types.push(e.type);
      seqs.push(e.sequence_number);
      if (e.type === "response.output_text.delta") text += e.delta;
    }
    const final = await stream.finalResponse();
    expect(text).toBe("streamed answer");
    expect(final.output_text).toBe("streamed answer");
    expect(seqs).toEqual(seqs.map((_, i) => i));
    expect(types[0]).toBe("response.created");
    expect(types.at(-1)).toBe("response.completed");
    expect(types).toContain("response.reasoning_summary_text.delta");
    expect(types.indexOf("response.content_part.added")).toBeLessThan(types.indexOf("response.output_text.delta"));
    const reasoning = final.output.find((i) => i.type === "reasoning") as { summary: Array<{ text: string }> };
    expect(reasoning.summary[0]!.text).toBe("let me think");
  });

  it("continues the same agent session with previous_response_id, and with conversation", async () => {
    const first = await client.responses.create({ model: "open-persona/build", input: say.countTurns() });
    expect(first.output_text).toBe("turns=1");
    const second = await client.responses.create({ model: "open-persona/build", input: say.countTurns(), previous_response_id: first.id });
    expect(second.output_text).toBe("turns=2");
    const conversation = `conv-${randomUUID()}`;
    expect((await client.responses.create({ model: "open-persona/build", input: say.countTurns(), conversation })).output_text).toBe("turns=1");
    expect((await client.responses.create({ model: "open-persona/build", input: say.countTurns(), conversation })).output_text).toBe("turns=2");
  });

  it("refuses an unknown previous_response_id (404) and a malformed input (400) in the API's error shape", async () => {
    const missing = await client.responses.create({ model: "open-persona/build", input: "hi", previous_response_id: "resp_nope" }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(OpenAI.NotFoundError);
    expect((missing as InstanceType<typeof OpenAI.NotFoundError>).code).toBe("previous_response_not_found");
    const bad = await client.responses.create({ model: "open-persona/build", input: [{ role: "user", content: [{ type: "input_image" } as never] }] }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(OpenAI.BadRequestError);
  });
});
