/**
 * Guest code in a live VM: the modules v86's JIT generates for a guest's hot code are
 * compiled by the process's compiler thread (src/internal/guestCode.mjs), and the guest
 * computes the same with them.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { V86Box } from "../src/index.ts"
import * as GuestCodeCompiler from "../src/internal/guestCodeCompiler.ts"

describe("guest code", () => {
  it.live("a loop that runs long enough to be compiled is compiled on the compiler thread, and computes the same", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const before = GuestCodeCompiler.compiledCount()
      const sum = yield* box.exec("awk 'BEGIN { for (i = 0; i < 300000; i++) s += i % 7; print s }'")
      expect(sum).toMatchObject({ exitCode: 0, stdout: "899997\n" })
      expect(GuestCodeCompiler.compiledCount()).toBeGreaterThan(before)
    }).pipe(Effect.provide(V86Box.layer({ standby: false }))), 120_000)
})
