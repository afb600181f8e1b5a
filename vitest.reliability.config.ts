import { defineConfig } from "vitest/config"

// `npm run test:reliability`: the reliability suite (docs/reliability.md) at the counts the
// issue promises. Files run one after another so that their VMs do not share the cores;
// the normal `npm test` runs the same files at a small scale.
export default defineConfig({
  test: {
    include: ["test/reliability/**/*.test.ts"],
    env: { V86BOX_RELIABILITY_SCALE: "full" },
    testTimeout: 30 * 60_000,
    hookTimeout: 180_000,
    pool: "forks",
    fileParallelism: false
  }
})
