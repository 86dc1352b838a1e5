/**
 * The accepted shape of `POST /v1/chat/completions` (validated with ajv). Unknown sampling
 * parameters are accepted and ignored: the agent's model settings are opencode's.
 */
import { Ajv, type ErrorObject } from "ajv";
import { BadRequestError } from "../errors/api-error.js";

export type ContentPart =
  | { type: "text"; text: string }
  | { type: "image_url"; image_url: { url: string; detail?: string } }
  | { type: "file"; file: { file_data?: string; filename?: string; file_id?: string } }
  | { type: string; [k: string]: unknown };

export interface ChatMessage {
  role: "system" | "developer" | "user" | "assistant" | "tool" | "function";
  content?: string | ContentPart[] | null;
  name?: string;
}

export interface ChatCompletionRequest {
  model: string;
  messages: ChatMessage[];
  stream?: boolean;
  stream_options?: { include_usage?: boolean } | null;
  user?: string;
}

const schema = {
  type: "object",
  required: ["model", "messages"],
  properties: {
    model: { type: "string", minLength: 1, maxLength: 256 },
    stream: { type: ["boolean", "null"] },
    stream_options: {
      type: ["object", "null"],
      properties: { include_usage: { type: "boolean" } },
    },
    messages: {
      type: "array",
      minItems: 1,
      items: {
        type: "object",
        required: ["role"],
        properties: {
          role: { enum: ["system", "developer", "user", "assistant", "tool", "function"] },
          name: { type: "string" },
          content: {
            // `items` applies to arrays only: a bad part is reported at its own path.
            type: ["string", "null", "array"],
            items: {
              type: "object",
              required: ["type"],
              properties: {
                type: { type: "string" },
                text: { type: "string" },
                image_url: {
                  type: "object",
                  required: ["url"],
                  properties: { url: { type: "string" }, detail: { type: "string" } },
                },
                file: {
                  type: "object",
                  properties: { file_data: { type: "string" }, filename: { type: "string" }, file_id: { type: "string" } },
                  anyOf: [{ required: ["file_data"] }, { required: ["file_id"] }],
                },
              },
              // A part must carry the object its type names (`{"type":"image_url"}` alone is a 400).
              allOf: [
                { if: { properties: { type: { const: "text" } } }, then: { required: ["text"] } },
                { if: { properties: { type: { const: "image_url" } } }, then: { required: ["image_url"] } },
                { if: { properties: { type: { const: "file" } } }, then: { required: ["file"] } },
              ],
            },
          },
        },
      },
    },
  },
} as const;

const ajv = new Ajv({ allErrors: false, strict: false });
const validate = ajv.compile<ChatCompletionRequest>(schema);

export function parseChatRequest(body: unknown): ChatCompletionRequest {
  if (!validate(body)) {
    const choice = oneOfMissing(validate.errors ?? []);
    if (choice) throw new BadRequestError(choice.message, "invalid_request", choice.param);
    const err = validate.errors?.[0];
    throw new BadRequestError(describe(err), "invalid_request", paramOf(err));
  }
  if (!body.messages.some((m) => m.role === "user")) {
    throw new BadRequestError("messages must contain at least one user message", "invalid_request", "messages");
  }
  return body;
}

function paramOf(err: ErrorObject | undefined): string | null {
  if (!err) return null;
  const path = err.instancePath.replace(/^\//, "").replace(/\/(\d+)/g, "[$1]").replace(/\//g, ".");
  const missing = err.keyword === "required" ? (err.params as { missingProperty: string }).missingProperty : "";
  return [path, missing].filter(Boolean).join(".") || null;
}

/** An `anyOf` of `required` branches (a file part's file_data or file_id) failed: name them all. */
function oneOfMissing(errors: ErrorObject[]): { message: string; param: string | null } | undefined {
  const anyOf = errors.find((e) => e.keyword === "anyOf");
  if (!anyOf) return undefined;
  const options = errors.filter((e) => e.keyword === "required" && e.instancePath === anyOf.instancePath).map(paramOf);
  if (options.length < 2) return undefined;
  return { message: `Missing required parameter: one of ${options.map((o) => `'${o}'`).join(" or ")}`, param: paramOf(anyOf) };
}

function describe(err: ErrorObject | undefined): string {
  if (!err) return "Invalid request body";
  const param = paramOf(err);
  if (err.keyword === "required") return `Missing required parameter: '${param}'`;
  return `Invalid value for '${param ?? "body"}': ${err.message ?? "invalid"}`;
}
