/**
 * exec and start replayed from transcripts/exec.ndjson: the same suite as the live one,
 * through the real agent client and service, without a VM. Timeouts run on the TestClock.
 */
import { layer } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as TestClock from "effect/TestClock"
import { Testkit } from "../testkit/index.ts"
import { execSuite } from "./suites/exec.ts"

/** Waits until the sandbox's timer is scheduled on the TestClock, then moves the clock. */
const elapse = (duration: Duration.DurationInput) =>
  Effect.gen(function*() {
    while (Chunk.isEmpty(yield* TestClock.sleeps())) yield* Effect.yieldNow()
    yield* TestClock.adjust(duration)
  })

layer(Testkit.layer("transcripts/exec.ndjson"), { timeout: "120 seconds" })("exec replayed", (it) => {
  execSuite(it, { live: false, elapse })
})
