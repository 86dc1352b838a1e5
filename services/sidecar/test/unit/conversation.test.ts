import { describe, expect, it } from "vitest";
import {
  chatTurn,
  derivedChatKey,
  history,
  isTaskPrompt,
  latestUserTurn,
  pastMessages,
  systemPrompt,
  textOf,
  toPromptParts,
} from "../../src/chat/conversation.js";
import { transcript } from "../../src/chat/turn-input.js";
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
    const t = transcript(pastMessages(convo))!;
    expect(t).toContain("User: first question\n\nAssistant: first answer\n\nUser: second question\n\nAssistant: second answer");
    expect(transcript([])).toBeUndefined();
  });

  it("transcript shows the tool-call blocks Open WebUI sends back as one line each", () => {
    const block = toolCallBlock({ kind: "tool-end", callId: "c1", name: "write", args: { filePath: "a.py", content: "x = '<1>'" }, result: "Wrote file successfully.", failed: false });
    const t = transcript(
      pastMessages([
        { role: "user", content: "write it" },
        { role: "assistant", content: `Sure.${block}Done.` },
        { role: "user", content: "and now?" },
      ]),
    )!;
    expect(t).toContain(`Assistant: Sure.\n[ran write {"filePath":"a.py","content":"x = '<1>'"}]\nDone.`);
    expect(t).not.toContain("<details");
    expect(t).not.toContain("Wrote file successfully");
  });

  it("chatTurn is the whole API-neutral turn: new parts, system text, earlier messages, a title", () => {
    const turn = chatTurn(convo, { maxImages: 16 });
    expect(turn.parts).toEqual([
      { type: "text", text: "third, part 1" },
      { type: "text", text: "third, part 2" },
    ]);
    expect(turn.system).toBe(systemPrompt(convo));
    expect(turn.earlier).toEqual(history(convo).map((m) => ({ role: m.role, text: textOf(m) })));
    expect(turn.title).toBe("first question");
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

  const imagePart = (url: string) => ({ type: "image_url", image_url: { url } });
  const GIF = `data:image/gif;base64,${Buffer.from("GIF89a\x01\x00\x01\x00", "latin1").toString("base64")}`;
  const WEBP = `data:image/webp;base64,${Buffer.from("RIFF\x24\x00\x00\x00WEBPVP8 ", "latin1").toString("base64")}`;

  it.each([
    ["bytes that are no image", `data:image/png;base64,${Buffer.from("plain text, no picture").toString("base64")}`],
    ["broken base64", "data:image/png;base64,iVBORw0KGgo*!"],
    ["base64 cut to an impossible length", "data:image/png;base64,iVBORw0KG"],
    ["a payload too short to be an image", "data:image/png;base64,iVBO"],
    ["an empty payload", "data:image/png;base64,"],
    ["an image that is not base64", "data:image/png,%89PNG%0D%0A%1A%0A"],
    ["an SVG", `data:image/svg+xml;base64,${Buffer.from("<svg/>").toString("base64")}`],
    ["a PDF declared as an image", "data:application/pdf;base64,JVBERi0xLjQK"],
  ])("rejects an image data URL holding %s (invalid_image)", (_what, url) => {
    let err: unknown;
    try {
      toPromptParts([{ role: "user", content: [imagePart(url)] }]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BadRequestError);
    expect(err).toMatchObject({ status: 400, code: "invalid_image", param: "messages" });
  });

  it("accepts PNG, JPEG, GIF and WebP, and labels each with the type its bytes show", () => {
    const mislabelled = JPEG.replace("image/jpeg", "image/png");
    const parts = toPromptParts([{ role: "user", content: [{ type: "text", text: "x" }, ...[PNG, JPEG, GIF, WEBP, mislabelled].map(imagePart)] }]);
    expect(parts.slice(1).map((p) => (p as { mime: string }).mime)).toEqual(["image/png", "image/jpeg", "image/gif", "image/webp", "image/jpeg"]);
    expect(parts[5]).toEqual({ type: "file", mime: "image/jpeg", url: JPEG, filename: "image-6.jpeg" });
  });

  it("checks images sent as file parts too, and leaves other files alone", () => {
    const call = (file_data: string) => () => toPromptParts([{ role: "user", content: [{ type: "file", file: { file_data, filename: "f" } }] }]);
    expect(call("data:image/jpeg;base64,AAAAAAAA")).toThrow(/not a PNG, JPEG, GIF or WebP/);
    expect(call(PNG)()).toContainEqual({ type: "file", mime: "image/png", url: PNG, filename: "f" });
    expect(call("data:text/plain;base64,AAAA")()).toContainEqual({ type: "file", mime: "text/plain", url: "data:text/plain;base64,AAAA", filename: "f" });
  });

  it("caps the images of the forwarded turn (image_url parts and image files), 16 by default", () => {
    const images = (n: number) => Array.from({ length: n }, () => imagePart(PNG));
    expect(toPromptParts([{ role: "user", content: images(16) }])).toHaveLength(17);
    expect(() => toPromptParts([{ role: "user", content: images(17) }])).toThrow(/at most 16 per request, this one has 17/);
    const mixed: ChatMessage[] = [
      { role: "user", content: [imagePart(PNG), imagePart("https://example.com/a.png")] },
      { role: "user", content: [{ type: "file", file: { file_data: PNG } }] },
    ];
    expect(() => toPromptParts(mixed, { maxImages: 2 })).toThrow(expect.objectContaining({ status: 400, code: "too_many_images", param: "messages" }));
    expect(toPromptParts(mixed, { maxImages: 3 })).toHaveLength(3);
    // Images earlier in the conversation are not forwarded and do not count.
    const convoWithImages: ChatMessage[] = [{ role: "user", content: images(20) }, { role: "assistant", content: "seen" }, { role: "user", content: "and now?" }];
    expect(toPromptParts(latestUserTurn(convoWithImages))).toEqual([{ type: "text", text: "and now?" }]);
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
