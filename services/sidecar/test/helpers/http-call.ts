/**
 * One JSON-or-multipart HTTP call with a bearer key, as Open WebUI's API (real or double) is
 * called throughout the tests. Never throws on an HTTP error: the status is the answer.
 */
// Answers are JSON of many shapes; the tests' assertions are their types.
export type Json = Record<string, any>;

export interface HttpAnswer<T = Json> {
  status: number;
  /** The response's content type. */
  type: string;
  /** Parsed JSON, or `{ text }` for anything else (Open WebUI's web app answers HTML). */
  body: T;
}

export async function httpCall<T = Json>(baseUrl: string, key: string | null, method: string, path: string, body?: unknown): Promise<HttpAnswer<T>> {
  const headers: Record<string, string> = key === null ? {} : { authorization: `Bearer ${key}` };
  let payload: BodyInit | undefined;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers["content-type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const res = await fetch(`${baseUrl}${path}`, { method, headers, body: payload, signal: AbortSignal.timeout(60_000) });
  const type = res.headers.get("content-type") ?? "";
  const text = await res.text();
  return { status: res.status, type, body: (type.includes("json") && text ? JSON.parse(text) : { text }) as T };
}
