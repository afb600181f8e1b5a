/**
 * Testing code that uses the sandbox, without a VM: `script()` writes a transcript by
 * hand (what the guest answers to each command) and `Testkit.layerReplay` provides
 * `V86Box` from it. The real service runs; only the emulator is replaced. This script
 * uses `node:assert` so it runs anywhere; in vitest, `Testkit.layer("transcripts/x.ndjson")`
 * also records real transcripts (see the README).
 *
 *   npx tsx examples/transcripts.ts
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Schema from "effect/Schema"
import assert from "node:assert/strict"
import { V86Box } from "../src/index.ts"
import { script, Testkit } from "../testkit/index.ts"

// ── The code under test ──────────────────────────────────────────────────────
class DiskUsageError extends Schema.TaggedError<DiskUsageError>()("DiskUsageError", { reason: Schema.String }) {}

/** Kilobytes used under `dir` in the sandbox. */
const diskUsage = (dir: string) =>
  Effect.gen(function*() {
    const box = yield* V86Box
    const result = yield* box.exec(`du -sk '${dir}' | cut -f1`)
    if (result.exitCode !== 0 || result.stderr !== "") {
      return yield* new DiskUsageError({ reason: result.stderr.trim() })
    }
    return Number(result.stdout)
  })

// ── Its tests: each one a scripted guest ─────────────────────────────────────
const replaying = (commands: Parameters<typeof script>[0]) =>
  Testkit.layerReplay(script(commands), { fingerprint: "ignore" })

const check = (name: string, test: Effect.Effect<void, unknown>) =>
  test.pipe(Effect.tap(() => Effect.sync(() => console.log(`✓ ${name}`))))

const tests = [
  check(
    "reads the guest's answer",
    Effect.gen(function*() {
      assert.equal(yield* diskUsage("/data"), 42)
    }).pipe(Effect.provide(replaying([{ command: "du -sk '/data' | cut -f1", stdout: "42\n" }])))
  ),
  check(
    "turns the guest's complaint into a typed error",
    Effect.gen(function*() {
      const error = yield* Effect.flip(diskUsage("/nope"))
      assert.equal(error._tag, "DiskUsageError")
      assert.match(error.reason, /No such file or directory/)
    }).pipe(Effect.provide(replaying([{
      command: "du -sk '/nope' | cut -f1",
      stdout: "",
      stderr: "du: cannot access '/nope': No such file or directory\n",
      exitCode: 0 // a pipeline's exit code is its last command's: the code must look at stderr
    }])))
  ),
  check(
    "a command the transcript does not expect fails the test, naming both",
    Effect.gen(function*() {
      const exit = yield* Effect.exit(diskUsage("/home"))
      assert.ok(Exit.isFailure(exit))
      const mismatch = Cause.squash(exit.cause)
      assert.match(String(mismatch), /TranscriptMismatch/)
      console.log(String(mismatch).split("\n").map((line) => `    ${line}`).join("\n"))
    }).pipe(Effect.provide(Testkit.layerReplay(script([{ command: "du -sk '/data' | cut -f1", stdout: "42\n" }]), {
      fingerprint: "ignore",
      unconsumed: "ignore"
    })))
  )
]

const started = Date.now()
Effect.runPromise(Effect.all(tests, { discard: true })).then(
  () => console.log(`${tests.length} passed in ${Date.now() - started} ms, no VM booted`),
  (error) => {
    console.error(String(error))
    process.exit(1)
  }
)
