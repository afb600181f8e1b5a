import { defineConfig } from "vitest/config"

// `npm run test:reliability`: the reliability suite (docs/reliability.md) at the counts the
// issue promises. Two files at a time, one VM each on the 2 cores: the soak (~14 minutes
// of sequential execs) runs beside the other files, which take ~4 minutes in all. The
// normal `npm test` runs the same files at a small scale.
export default defineConfig({
  test: {
    include: ["test/reliability/**/*.test.ts"],
    env: { V86BOX_RELIABILITY_SCALE: "full" },
    testTimeout: 30 * 60_000,
    hookTimeout: 180_000,
    pool: "forks",
    fileParallelism: true,
    maxWorkers: 2
  }
})
