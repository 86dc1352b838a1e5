import type { IncomingHttpHeaders } from "node:http";

/** A request header's first value, trimmed; undefined when absent or blank. */
export function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  const s = (Array.isArray(v) ? v[0] : v)?.trim();
  return s || undefined;
}
