import { describe, expect, it } from "vitest";
import { parseChatRequest } from "../../src/chat/request-schema.js";
import { BadRequestError } from "../../src/errors/api-error.js";

function errorOf(body: unknown): BadRequestError {
  try {
    parseChatRequest(body);
  } catch (e) {
    expect(e).toBeInstanceOf(BadRequestError);
    return e as BadRequestError;
  }
  throw new Error("expected parseChatRequest to throw");
}

const ok = { model: "open-persona/build", messages: [{ role: "user", content: "hi" }] };

describe("parseChatRequest", () => {
  it("accepts a minimal request and ignores unknown sampling parameters", () => {
    const body = { ...ok, temperature: 0.2, top_p: 1, stream: true, stream_options: { include_usage: true }, user: "u" };
    expect(parseChatRequest(body)).toBe(body);
    expect(() => parseChatRequest({ ...ok, stream: null, stream_options: null })).not.toThrow();
  });

  it("accepts multimodal content", () => {
    expect(() =>
      parseChatRequest({
        model: "m",
        messages: [
          { role: "system", content: null },
          { role: "user", content: [{ type: "text", text: "x" }, { type: "image_url", image_url: { url: "data:image/png;base64,AA==" } }] },
        ],
      }),
    ).not.toThrow();
  });

  it.each([
    ["missing model", { messages: ok.messages }, "model", /Missing required parameter: 'model'/],
    ["missing messages", { model: "m" }, "messages", /Missing required parameter: 'messages'/],
    ["empty model", { ...ok, model: "" }, "model", /'model'/],
    ["model not a string", { ...ok, model: 42 }, "model", /'model'/],
    ["empty messages", { ...ok, messages: [] }, "messages", /'messages'/],
    ["bad stream", { ...ok, stream: "yes" }, "stream", /'stream'/],
    ["bad include_usage", { ...ok, stream_options: { include_usage: "yes" } }, "stream_options.include_usage", /'stream_options\.include_usage'/],
    ["bad role", { model: "m", messages: [{ role: "user", content: "a" }, { role: "robot", content: "b" }] }, "messages[1].role", /'messages\[1\]\.role'/],
    ["missing role", { model: "m", messages: [{ role: "user", content: "a" }, { content: "b" }] }, "messages[1].role", /'messages\[1\]\.role'/],
  ])("%s names the parameter", (_name, body, param, message) => {
    const e = errorOf(body);
    expect(e.param).toBe(param);
    expect(e.message).toMatch(message);
    expect(e.status).toBe(400);
    expect(e.render()).toEqual({ error: { message: e.message, type: "invalid_request_error", param, code: "invalid_request" } });
  });

  it("names the message whose content is malformed", () => {
    const e = errorOf({ model: "m", messages: [{ role: "user", content: [{ type: "image_url", image_url: {} }] }] });
    expect(e.param).toMatch(/^messages\[0\]\.content/);
  });

  it.each([
    ["image_url", { type: "image_url" }, "messages[0].content[1].image_url"],
    ["file", { type: "file" }, "messages[0].content[1].file"],
    ["text", { type: "text" }, "messages[0].content[1].text"],
  ])("a %s part without its object names it", (_type, part, param) => {
    const e = errorOf({ model: "m", messages: [{ role: "user", content: [{ type: "text", text: "x" }, part] }] });
    expect(e.param).toBe(param);
    expect(e.message).toBe(`Missing required parameter: '${param}'`);
  });

  it("a file part needs file_data or file_id, and says so", () => {
    const e = errorOf({ model: "m", messages: [{ role: "user", content: [{ type: "file", file: { filename: "a.pdf" } }] }] });
    expect(e.param).toBe("messages[0].content[0].file");
    expect(e.message).toMatch(/one of 'messages\[0\]\.content\[0\]\.file\.file_data' or 'messages\[0\]\.content\[0\]\.file\.file_id'/);
    expect(() =>
      parseChatRequest({ model: "m", messages: [{ role: "user", content: [{ type: "file", file: { file_id: "file-1" } }] }] }),
    ).not.toThrow();
  });

  it("rejects a body that is not an object", () => {
    expect(errorOf(null).status).toBe(400);
    expect(errorOf([ok]).status).toBe(400);
  });

  it("requires at least one user message", () => {
    const e = errorOf({ model: "m", messages: [{ role: "system", content: "s" }, { role: "assistant", content: "a" }] });
    expect(e.param).toBe("messages");
    expect(e.message).toMatch(/user message/);
  });
});
