/**
 * The accepted shape of `POST /v1/responses` (validated with ajv) and its translation into a
 * turn. `input` is a string or a list of items; the items are read as the conversation that
 * chat completions' `messages` are (input_text/input_image/input_file parts become text,
 * image and file parts), so that both APIs share one conversion (chat/conversation.ts).
 * Items the agent's session already holds or that the sidecar made (item_reference,
 * reasoning, mcp_call, function_call…) are accepted and left out. Unknown top-level fields
 * (sampling settings, `tools`, `include`, …) are accepted and ignored.
 */
import { Ajv } from "ajv";
import { BadRequestError } from "../errors/api-error.js";
import type { ChatMessage, ContentPart } from "../chat/request-schema.js";

export interface ResponsesRequest {
  model: string;
  input: string | InputItem[];
  instructions?: string | null;
  previous_response_id?: string | null;
  conversation?: string | { id: string } | null;
  metadata?: Record<string, string> | null;
  stream?: boolean | null;
  background?: boolean | null;
}

export interface InputItem {
  type?: string;
  role?: string;
  content?: string | Array<{ type: string; [k: string]: unknown }>;
  [k: string]: unknown;
}

const part = {
  type: "object",
  required: ["type"],
  properties: { type: { type: "string" }, text: { type: "string" }, image_url: { type: "string" }, file_data: { type: "string" }, filename: { type: "string" } },
  allOf: [
    { if: { properties: { type: { enum: ["input_text", "output_text"] } } }, then: { required: ["text"] } },
    { if: { properties: { type: { const: "input_image" } } }, then: { anyOf: [{ required: ["image_url"] }, { required: ["file_id"] }] } },
    { if: { properties: { type: { const: "input_file" } } }, then: { anyOf: [{ required: ["file_data"] }, { required: ["file_id"] }, { required: ["file_url"] }] } },
  ],
} as const;

const schema = {
  type: "object",
  required: ["model", "input"],
  properties: {
    model: { type: "string", minLength: 1, maxLength: 256 },
    input: {
      anyOf: [
        { type: "string", minLength: 1 },
        {
          type: "array",
          minItems: 1,
          items: {
            type: "object",
            properties: {
              type: { type: "string" },
              role: { enum: ["user", "assistant", "system", "developer"] },
              content: { type: ["string", "array"], items: part },
            },
          },
        },
      ],
    },
    instructions: { type: ["string", "null"] },
    previous_response_id: { type: ["string", "null"], maxLength: 256 },
    conversation: { anyOf: [{ type: "string", maxLength: 256 }, { type: "object", required: ["id"], properties: { id: { type: "string", maxLength: 256 } } }, { type: "null" }] },
    metadata: { type: ["object", "null"], maxProperties: 16, additionalProperties: { type: "string", maxLength: 512 } },
    stream: { type: ["boolean", "null"] },
    background: { type: ["boolean", "null"] },
  },
} as const;

const ajv = new Ajv({ allErrors: false, strict: false });
const validate = ajv.compile<ResponsesRequest>(schema);

export function parseResponsesRequest(body: unknown): ResponsesRequest {
  if (!validate(body)) {
    const err = validate.errors?.[0];
    const param = err ? err.instancePath.replace(/^\//, "").replace(/\/(\d+)/g, "[$1]").replace(/\//g, ".") || null : null;
    throw new BadRequestError(`Invalid value for '${param ?? "body"}': ${err?.message ?? "invalid"}`, "invalid_request", param);
  }
  const messages = inputMessages(body.input);
  if (!messages.some((m) => m.role === "user")) throw new BadRequestError("input must contain at least one user message", "invalid_request", "input");
  return body;
}

/** The conversation the input carries, as chat messages (items the session holds are skipped). */
export function inputMessages(input: ResponsesRequest["input"]): ChatMessage[] {
  if (typeof input === "string") return [{ role: "user", content: input }];
  const out: ChatMessage[] = [];
  for (const item of input) {
    const isMessage = item.type === undefined || item.type === "message";
    if (!isMessage || !item.role) {
      // An item the session holds (item_reference, reasoning, mcp_call, …) stands for an
      // assistant turn: keep it as a boundary, or the earlier user message would join the
      // latest turn (the AI SDK resends [user, item_reference, user]).
      if (out.at(-1)?.role === "user") out.push({ role: "assistant", content: "" });
      continue;
    }
    const role = item.role as ChatMessage["role"];
    out.push({ role, content: typeof item.content === "string" ? item.content : (item.content ?? []).map(toChatPart) });
  }
  return out;
}

function toChatPart(p: { type: string; [k: string]: unknown }): ContentPart {
  switch (p.type) {
    case "input_text":
    case "output_text":
      return { type: "text", text: p.text as string };
    case "input_image": {
      if (typeof p.image_url !== "string") throw new BadRequestError("input_image needs image_url (a data: or http(s) URL); file ids are not supported", "unsupported_content", "input");
      return { type: "image_url", image_url: { url: p.image_url } };
    }
    case "input_file": {
      if (typeof p.file_data !== "string") throw new BadRequestError("input_file needs file_data; file ids and URLs are not supported", "unsupported_content", "input");
      const filename = typeof p.filename === "string" ? p.filename : undefined;
      // file_data is a data: URL, or bare base64 (then typed by its name, if at all).
      const data = p.file_data.startsWith("data:") ? p.file_data : `data:${mimeOf(filename)};base64,${p.file_data}`;
      return { type: "file", file: { file_data: data, filename } };
    }
    default:
      throw new BadRequestError(`Unsupported content part type '${p.type}'`, "unsupported_content", "input");
  }
}

const MIME: Record<string, string> = { pdf: "application/pdf", txt: "text/plain", md: "text/markdown", csv: "text/csv", json: "application/json", png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", gif: "image/gif", webp: "image/webp" };

function mimeOf(filename: string | undefined): string {
  const ext = filename?.split(".").pop()?.toLowerCase() ?? "";
  return MIME[ext] ?? "application/octet-stream";
}

/** The conversation's id when the client named one (`conversation`, as a string or `{id}`). */
export function conversationId(body: ResponsesRequest): string | undefined {
  const c = body.conversation;
  return typeof c === "string" ? c : (c?.id ?? undefined);
}
