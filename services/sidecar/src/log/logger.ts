/**
 * pino JSON logs. Secrets never reach them: request headers are not logged, and the paths
 * below are redacted as a second line of defence for anything that slips into a log object.
 */
import { pino, type Logger } from "pino";

export type { Logger };

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: "open-persona-sidecar" },
      redact: {
        paths: [
          "authorization",
          "*.authorization",
          "headers",
          "*.headers",
          "password",
          "*.password",
          "apiKey",
          "*.apiKey",
          "key",
          "*.key",
        ],
        censor: "[redacted]",
      },
    },
    destination,
  );
}
