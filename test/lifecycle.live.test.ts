/**
 * Nothing is left running: however a sandbox's scope ends, its emulator worker ends too.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import { V86Box } from "../src/index.ts"
import { runningWorkerCount } from "../src/internal/v86Machine.ts"

/** Waits (bounded) until no emulator worker runs in this process. */
const allWorkersGone = Effect.gen(function*() {
  for (let attempt = 0; attempt < 100 && runningWorkerCount() > 0; attempt++) yield* Effect.sleep("50 millis")
  return runningWorkerCount()
})

describe("sandbox lifecycle", () => {
  it.live("interrupting the layer mid-boot ends the emulator worker", () =>
    Effect.gen(function*() {
      const booting = yield* Effect.fork(Effect.scoped(Layer.build(V86Box.layer({ warmStart: false }))))
      while (runningWorkerCount() === 0) yield* Effect.sleep("10 millis")
      yield* Effect.sleep("300 millis")
      expect(runningWorkerCount()).toBe(1)
      yield* Fiber.interrupt(booting)
      expect(yield* allWorkersGone).toBe(0)
    }), 60_000)

  it.live("closing the scope after use ends the emulator worker", () =>
    Effect.gen(function*() {
      const result = yield* Effect.scoped(Effect.gen(function*() {
        const box = Context.get(yield* Layer.build(V86Box.layer()), V86Box)
        expect(runningWorkerCount()).toBe(1)
        return yield* box.exec("echo used")
      }))
      expect(result.stdout).toBe("used\n")
      expect(yield* allWorkersGone).toBe(0)
    }), 120_000)
})
