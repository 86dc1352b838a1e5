/**
 * The Responses API's objects as the sidecar sends them (the fields every client checked in
 * shared/reference/responses-api.md needs; nothing more). Tool runs are `mcp_call` items: the
 * SDKs read those as tools already run on the server, never as calls to execute.
 */
/** A link in the text: the sidecar's own artifact links (artifacts/artifact-links.ts). */
export interface UrlCitation {
  type: "url_citation";
  url: string;
  title: string;
  start_index: number;
  end_index: number;
}

export interface OutputText {
  type: "output_text";
  text: string;
  annotations: UrlCitation[];
  logprobs: [];
}

export interface MessageItem {
  id: string;
  type: "message";
  role: "assistant";
  status: "in_progress" | "completed" | "incomplete";
  content: OutputText[];
}

export interface ReasoningItem {
  id: string;
  type: "reasoning";
  summary: Array<{ type: "summary_text"; text: string }>;
}

export interface McpCallItem {
  id: string;
  type: "mcp_call";
  server_label: "opencode";
  name: string;
  /** A JSON object, as a string. */
  arguments: string;
  output: string | null;
  error: { type: "mcp_tool_execution_error"; content: Array<{ type: "text"; text: string }> } | null;
  approval_request_id: null;
  status: "in_progress" | "completed" | "failed";
}

export type OutputItem = MessageItem | ReasoningItem | McpCallItem;

export interface ResponseUsage {
  input_tokens: number;
  input_tokens_details: { cached_tokens: number };
  output_tokens: number;
  output_tokens_details: { reasoning_tokens: number };
  total_tokens: number;
}

export type ResponseStatus = "queued" | "in_progress" | "completed" | "failed" | "cancelled" | "incomplete";

export interface ResponseObject {
  id: string;
  object: "response";
  created_at: number;
  completed_at: number | null;
  status: ResponseStatus;
  model: string;
  output: OutputItem[];
  usage: ResponseUsage | null;
  /** `type` too: the AI SDK's schema wants it to show the message rather than fail on it. */
  error: { type: string; code: string; message: string } | null;
  incomplete_details: { reason: "max_output_tokens" } | null;
  instructions: string | null;
  metadata: Record<string, string>;
  previous_response_id: string | null;
  conversation: { id: string } | null;
  background: boolean;
  store: boolean;
  parallel_tool_calls: boolean;
  tool_choice: "auto";
  tools: [];
  temperature: number | null;
  top_p: number | null;
  text: { format: { type: "text" } };
  truncation: "disabled";
}

/** One streamed event: its `type` and `sequence_number`, and the rest. */
export type StreamEvent = { type: string; sequence_number: number } & Record<string, unknown>;
