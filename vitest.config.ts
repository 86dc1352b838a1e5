import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["services/*/test/**/*.test.ts"],
    globalSetup: ["services/sidecar/test/global-setup.ts"],
    // End-to-end suites start real opencode processes: give them room, and don't run
    // several heavy files at once on a 2-core machine.
    testTimeout: 60_000,
    hookTimeout: 90_000,
    fileParallelism: false,
    reporters: ["default"],
  },
});
