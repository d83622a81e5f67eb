import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    globalSetup: ["test/support/build.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // State-store suites share one PostgreSQL server; each suite uses its own schema, so files may run in parallel.
    pool: "forks",
  },
});
