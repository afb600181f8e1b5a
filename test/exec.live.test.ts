/**
 * exec and start against a live VM: one boot for the whole file.
 */
import { describe, expect, it, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { V86Box } from "../src/index.ts"
import { execSuite } from "./suites/exec.ts"

layer(V86Box.layer(), { timeout: "120 seconds", excludeTestServices: true })("exec on a live VM", (it) => {
  execSuite(it, { live: true, elapse: () => Effect.void })
})

describe("layer options", () => {
  it.live("bootTimeout of 1 millis fails with BootTimeout", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(Layer.build(V86Box.layer({ bootTimeout: "1 millis" }))))
      expect(error._tag).toBe("BootTimeout")
      expect(error.message).toContain("1 ms")
    }))

  it.live("bad options fail with InvalidOptions naming each field", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(
        Layer.build(V86Box.layer({ memoryMB: 3, bootTimeout: "soon" as never, maxOutputBytes: -1 }))
      ))
      expect(error._tag).toBe("InvalidOptions")
      expect(error.message).toContain("memoryMB")
      expect(error.message).toContain("bootTimeout")
      expect(error.message).toContain("maxOutputBytes")
    }))
})
