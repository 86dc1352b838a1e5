/**
 * Workspace files through a real `opencode serve` (the runner backend), beside the disk
 * backend on the very same directory: what the tests of the workspace rules run against.
 */
import { pino } from "pino";
import { OpencodeClient } from "../../src/opencode/client.js";
import { EventHub } from "../../src/opencode/event-hub.js";
import type { RunnerEndpoint } from "../../src/runners/runner.js";
import { DiskWorkspaceFiles } from "../../src/workspace/disk-workspace-files.js";
import { RunnerWorkspaceFiles } from "../../src/workspace/runner-workspace-files.js";
import type { WorkspaceFiles } from "../../src/workspace/workspace-files.js";
import { startOpencodeServer, type OpencodeServer } from "../fixtures/opencode-server.js";

export interface Backends {
  /** Both backends over `dir` (opencode sees the same directory: it runs on this machine). */
  of(dir: string): Record<"disk" | "runner", WorkspaceFiles>;
  endpoint(dir: string): RunnerEndpoint;
  close(): Promise<void>;
}

export async function startBackends(): Promise<Backends> {
  // No prompt is ever sent: the model's address is never called.
  const server: OpencodeServer = await startOpencodeServer("http://127.0.0.1:9/v1");
  const client = new OpencodeClient(server.url, { username: "opencode", password: server.password });
  const events = new EventHub(client, pino({ level: "silent" }));
  const endpoint = (directory: string): RunnerEndpoint => ({ client, events, directory });
  return {
    of: (dir) => ({ disk: new DiskWorkspaceFiles(dir), runner: new RunnerWorkspaceFiles(endpoint(dir)) }),
    endpoint,
    close: async () => {
      events.close();
      await server.close();
    },
  };
}
