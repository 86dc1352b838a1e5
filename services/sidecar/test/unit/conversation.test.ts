import { describe, expect, it } from "vitest";
import {
  derivedChatKey,
  history,
  isTaskPrompt,
  latestUserTurn,
  systemPrompt,
  textOf,
  toPromptParts,
  transcript,
} from "../../src/chat/conversation.js";
import { toolCallBlock } from "../../src/chat/openai-chunks.js";
import type { ChatMessage } from "../../src/chat/request-schema.js";
import { BadRequestError } from "../../src/errors/api-error.js";

const PNG = "data:image/png;base64,iVBORw0KGgo=";
const JPEG = "data:image/jpeg;base64,/9j/4AAQ";

const convo: ChatMessage[] = [
  { role: "system", content: "be brief" },
  { role: "user", content: "first question" },
  { role: "assistant", content: "first answer" },
  { role: "user", content: "second question" },
  { role: "assistant", content: "second answer" },
  { role: "user", content: "third, part 1" },
  { role: "system", content: "late system note" },
  { role: "user", content: [{ type: "text", text: "third, part 2" }] },
];

describe("latestUserTurn / history", () => {
  it("takes the user messages after the last assistant message", () => {
    expect(latestUserTurn(convo)).toEqual([convo[5], convo[7]]);
  });

  it("takes everything when no assistant spoke yet", () => {
    const msgs: ChatMessage[] = [
      { role: "system", content: "s" },
      { role: "user", content: "a" },
      { role: "user", content: "b" },
    ];
    expect(latestUserTurn(msgs).map(textOf)).toEqual(["a", "b"]);
    expect(history(msgs)).toEqual([]);
  });

  it("history is the user/assistant exchange before the latest turn", () => {
    expect(history(convo).map((m) => `${m.role}:${textOf(m)}`)).toEqual([
      "user:first question",
      "assistant:first answer",
      "user:second question",
      "assistant:second answer",
    ]);
  });

  it("transcript replays history for a recreated session", () => {
    const t = transcript(history(convo))!;
    expect(t).toContain("User: first question\n\nAssistant: first answer\n\nUser: second question\n\nAssistant: second answer");
    expect(transcript([])).toBeUndefined();
  });

  it("transcript shows the tool-call blocks Open WebUI sends back as one line each", () => {
    const block = toolCallBlock({ kind: "tool-end", callId: "c1", name: "write", args: { filePath: "a.py", content: "x = '<1>'" }, result: "Wrote file successfully.", failed: false });
    const t = transcript([
      { role: "user", content: "write it" },
      { role: "assistant", content: `Sure.${block}Done.` },
    ])!;
    expect(t).toContain(`Assistant: Sure.\n[ran write {"filePath":"a.py","content":"x = '<1>'"}]\nDone.`);
    expect(t).not.toContain("<details");
    expect(t).not.toContain("Wrote file successfully");
  });

  it("systemPrompt joins system and developer messages", () => {
    expect(systemPrompt([...convo, { role: "developer", content: "dev" }])).toBe("be brief\n\nlate system note\n\ndev");
    expect(systemPrompt([{ role: "user", content: "x" }])).toBeUndefined();
  });
});

describe("toPromptParts", () => {
  it("turns text and data-URL images into text and file parts", () => {
    const parts = toPromptParts([
      {
        role: "user",
        content: [
          { type: "text", text: "what is this?" },
          { type: "image_url", image_url: { url: PNG } },
          { type: "image_url", image_url: { url: JPEG, detail: "high" } },
        ],
      },
    ]);
    expect(parts).toEqual([
      { type: "text", text: "what is this?" },
      { type: "file", mime: "image/png", url: PNG, filename: "image-2.png" },
      { type: "file", mime: "image/jpeg", url: JPEG, filename: "image-3.jpeg" },
    ]);
  });

  it("adds a text part when the turn is only an image", () => {
    const parts = toPromptParts([{ role: "user", content: [{ type: "image_url", image_url: { url: PNG } }] }]);
    expect(parts[0]).toEqual({ type: "text", text: "(see attachment)" });
    expect(parts[1]).toMatchObject({ type: "file", mime: "image/png" });
  });

  it("passes http(s) image URLs on as text", () => {
    expect(toPromptParts([{ role: "user", content: [{ type: "image_url", image_url: { url: "https://example.com/cat.png" } }] }])).toContainEqual({
      type: "text",
      text: "Image: https://example.com/cat.png",
    });
  });

  it.each(["ftp://example.com/x.png", "file:///etc/passwd", "javascript:alert(1)", "data:notamime,xx", ""])(
    "rejects image URL %j with a BadRequestError",
    (url) => {
      const call = () => toPromptParts([{ role: "user", content: [{ type: "image_url", image_url: { url } }] }]);
      expect(call).toThrow(BadRequestError);
      try {
        call();
      } catch (e) {
        expect((e as BadRequestError).status).toBe(400);
        expect((e as BadRequestError).code).toBe("invalid_image_url");
        expect((e as BadRequestError).param).toBe("messages");
      }
    },
  );

  it("accepts file parts with data URLs and rejects others", () => {
    const pdf = "data:application/pdf;base64,JVBERi0=";
    expect(toPromptParts([{ role: "user", content: [{ type: "file", file: { file_data: pdf, filename: "a.pdf" } }] }])).toContainEqual({
      type: "file",
      mime: "application/pdf",
      url: pdf,
      filename: "a.pdf",
    });
    expect(() => toPromptParts([{ role: "user", content: [{ type: "file", file: { file_id: "file-123" } }] }])).toThrow(BadRequestError);
    expect(() => toPromptParts([{ role: "user", content: [{ type: "input_audio", input_audio: {} }] }])).toThrow(/input_audio/);
  });

  it("joins several user messages of one turn in order", () => {
    expect(toPromptParts(latestUserTurn(convo))).toEqual([
      { type: "text", text: "third, part 1" },
      { type: "text", text: "third, part 2" },
    ]);
  });
});

describe("derivedChatKey", () => {
  const first: ChatMessage[] = [{ role: "user", content: "plan my trip" }];
  const grown: ChatMessage[] = [
    { role: "system", content: "sys" },
    ...first,
    { role: "assistant", content: "sure" },
    { role: "user", content: "to Rome" },
  ];

  it("stays the same while the history grows", () => {
    const k = derivedChatKey("userhash1", first);
    expect(k).toMatch(/^derived:[0-9a-f]{24}$/);
    expect(derivedChatKey("userhash1", grown)).toBe(k);
  });

  it("differs per user and per first message", () => {
    const k = derivedChatKey("userhash1", first);
    expect(derivedChatKey("userhash2", first)).not.toBe(k);
    expect(derivedChatKey("userhash1", [{ role: "user", content: "plan my trip!" }])).not.toBe(k);
  });

  it("cannot be forged by moving text between user id and message", () => {
    expect(derivedChatKey("ab", [{ role: "user", content: "c" }])).not.toBe(derivedChatKey("a", [{ role: "user", content: "bc" }]));
  });
});

describe("isTaskPrompt", () => {
  it("detects Open WebUI background tasks in the last user message", () => {
    expect(isTaskPrompt([{ role: "user", content: "### Task:\nGenerate a title" }], false)).toBe(true);
    expect(isTaskPrompt([{ role: "user", content: "  \n### Task: tags" }], false)).toBe(true);
    expect(isTaskPrompt([{ role: "user", content: [{ type: "text", text: "### Task: follow-ups" }] }], false)).toBe(true);
  });

  it("keeps chat turns that carry Open WebUI's RAG template, and streamed turns, in the chat", () => {
    const rag = "### Task:\nRespond to the user query using the provided context.\n\n<context>\n<source id=\"1\">notes</source>\n</context>\n\nwhat is in my notes?";
    expect(isTaskPrompt([{ role: "user", content: rag }], false)).toBe(false);
    expect(isTaskPrompt([{ role: "user", content: rag }], true)).toBe(false);
    expect(isTaskPrompt([{ role: "user", content: "### Task:\nGenerate a title" }], true)).toBe(false);
  });

  it("ignores ordinary prompts and earlier task messages", () => {
    expect(isTaskPrompt([{ role: "user", content: "Explain ### Task: syntax" }], false)).toBe(false);
    expect(
      isTaskPrompt([
        { role: "user", content: "### Task: old" },
        { role: "assistant", content: "x" },
        { role: "user", content: "a normal question" },
      ], false),
    ).toBe(false);
    expect(isTaskPrompt([{ role: "system", content: "### Task: system" }, { role: "user", content: "hi" }], false)).toBe(false);
  });
});
