import type { IncomingHttpHeaders } from "node:http";
import { BadRequestError } from "../errors/api-error.js";

/**
 * Request headers as a string (one occurrence, or Node's join of several) or an array of
 * every occurrence: `req.headers` and `req.headersDistinct` both fit.
 */
export type HeaderBag = IncomingHttpHeaders | NodeJS.Dict<string | string[]>;

/** A request header's first value, trimmed; undefined when absent or blank. */
export function headerValue(headers: HeaderBag, name: string): string | undefined {
  const v = headers[name];
  const s = (Array.isArray(v) ? v[0] : v)?.trim();
  return s || undefined;
}

/**
 * A header that must come at most once, trimmed; undefined when absent or blank. Read it
 * from `req.headersDistinct`: `req.headers` joins repeats of most headers with ", " (two
 * user ids would become a third) and silently keeps only the first of others (Authorization).
 */
export function singleHeaderValue(headers: HeaderBag, name: string, display: string): string | undefined {
  const v = headers[name];
  if (Array.isArray(v) && v.length > 1) {
    throw new BadRequestError(`The ${display} header was sent more than once`, "duplicate_header");
  }
  return headerValue(headers, name);
}
