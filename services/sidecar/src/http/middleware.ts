/** Request-scoped plumbing: request id + logger, authentication, and the error renderer. */
import { randomUUID } from "node:crypto";
import type { NextFunction, Request, Response } from "express";
import type { Authenticator, Identity } from "../auth/identity.js";
import { BadRequestError, NotFoundError, toApiError } from "../errors/api-error.js";
import type { Logger } from "../log/logger.js";

export function requestContext(log: Logger) {
  return (req: Request, res: Response, next: NextFunction): void => {
    const incoming = req.headers["x-request-id"];
    const requestId = typeof incoming === "string" && /^[\w.-]{1,64}$/.test(incoming) ? incoming : randomUUID();
    res.setHeader("x-request-id", requestId);
    res.locals.log = log.child({ requestId });
    const started = process.hrtime.bigint();
    res.on("close", () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      (res.locals.log as Logger).info(
        { method: req.method, path: loggedPath(req.originalUrl), status: res.statusCode, ms: Math.round(ms * 10) / 10, aborted: !res.writableFinished || undefined },
        "request",
      );
    });
    next();
  };
}

/** The path without its query, and without an artifact link's token (a capability, like a key). */
function loggedPath(url: string): string {
  return url.split("?")[0]!.replace(/^(\/v1\/artifacts\/)[^/]+/, "$1[token]");
}

export function authenticate(auth: Authenticator) {
  return async (req: Request, res: Response, next: NextFunction): Promise<void> => {
    // headersDistinct keeps every occurrence: a repeated identity header is refused, not joined.
    const caller = await auth.authenticate(req.headersDistinct);
    res.locals.identity = caller.identity;
    res.locals.missingIdentity = caller.missing;
    // Only the hash is ever logged: user ids are often e-mail addresses.
    res.locals.log = (res.locals.log as Logger).child({ via: caller.via, user: caller.identity?.userHash });
    next();
  };
}

/** The caller `authenticate` found; a request that named no user is a 400 saying what is missing. */
export function requireIdentity(res: Response): Identity {
  const identity = res.locals.identity as Identity | undefined;
  if (!identity) throw new BadRequestError(res.locals.missingIdentity as string, "missing_user");
  return identity;
}

export function notFound(req: Request): never {
  throw new NotFoundError(`Unknown route ${req.method} ${req.path}`, "unknown_route");
}

/**
 * Renders any error in OpenAI's shape. The client gets only the ApiError's own message; what
 * lies behind it (a raw exception with its stack, a runner's answer: `cause`) goes to the log.
 */
export function errorHandler(err: unknown, _req: Request, res: Response, _next: NextFunction): void {
  const apiError = toApiError(err);
  const log = (res.locals.log as Logger | undefined) ?? undefined;
  const cause = (err as { cause?: unknown } | undefined)?.cause;
  if (apiError.status >= 500) {
    const behind = err === apiError ? {} : { err }; // pino logs an Error with its stack
    log?.error({ code: apiError.code, message: apiError.message, ...behind, ...(cause === undefined ? {} : { cause: loggable(cause) }) }, "request failed");
  } else {
    // Only the kind of a rejected body (body-parser's errors carry the body itself).
    const kind = err === apiError ? undefined : (err as { type?: unknown } | undefined)?.type;
    log?.info({ status: apiError.status, code: apiError.code, ...(typeof kind === "string" ? { kind } : {}) }, "request rejected");
  }
  if (res.headersSent) {
    res.end();
    return;
  }
  if (apiError.retryAfterS !== undefined) res.setHeader("retry-after", String(apiError.retryAfterS));
  res.status(apiError.status).json(apiError.render());
}

/** pino serializes an Error only under `err`: spell out one found elsewhere. */
function loggable(v: unknown): unknown {
  return v instanceof Error ? { type: v.name, message: v.message, stack: v.stack } : v;
}
