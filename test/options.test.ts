/**
 * Command options are checked before anything reaches the guest: every bad field is named.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { decodeExecOptions } from "../src/Options.ts"

describe("exec options", () => {
  it.effect("a NUL byte in the command, cwd or an env value is refused, naming each field", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(decodeExecOptions("echo a\0b", { cwd: "/tmp\0x", env: { A: "1\0" } }))
      expect(error._tag).toBe("InvalidOptions")
      expect(error.issues.join("\n")).toMatch(/command: must not contain a NUL byte/)
      expect(error.issues.join("\n")).toMatch(/cwd: must not contain a NUL byte/)
      expect(error.issues.join("\n")).toMatch(/env\.A: must not contain a NUL byte/)
    }))

  it.effect("bad names, users, timeouts and limits are each named", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(decodeExecOptions("true", {
        env: { "1BAD": "x" },
        user: "admin" as never,
        timeout: "whenever" as never,
        maxOutputBytes: 0
      }))
      const text = error.issues.join("\n")
      for (const field of ["env", "user", "timeout", "maxOutputBytes"]) expect(text).toContain(field)
    }))

  it.effect("good options decode to a uid and durations", () =>
    Effect.gen(function*() {
      const decoded = yield* decodeExecOptions("true", { user: "user", timeout: "2 seconds", cwd: "/tmp" })
      expect(decoded.uid).toBe(1000)
      expect(decoded.cwd).toBe("/tmp")
    }))
})
