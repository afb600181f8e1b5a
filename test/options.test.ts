/**
 * Command options are checked before anything reaches the guest: every bad field is named.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { V86Box } from "../src/index.ts"
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

describe("mount options", () => {
  const refused = (mounts: ReadonlyArray<{ host: string; guest: string; readOnly?: boolean }>) =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(Layer.build(V86Box.layer({ mounts }))))
      if (error._tag !== "InvalidOptions") throw new Error(`expected InvalidOptions, got ${error._tag}: ${error.message}`)
      return error.issues
    })

  it.effect("a missing host directory, a guest path that is not plain and absolute, or two mounts at one path: InvalidOptions before any boot", () =>
    Effect.gen(function*() {
      const directory = tmpdir()
      const missing = join(directory, "v86box-no-such-directory")
      expect(yield* refused([{ host: missing, guest: "/mnt/x" }])).toEqual(["mounts.0.host: must be an existing directory on the host"])
      const notPlain = ['mounts.0.guest: must be an absolute guest path other than "/", without ".", ".." or empty parts']
      expect(yield* refused([{ host: directory, guest: "mnt/x" }])).toEqual(notPlain)
      expect(yield* refused([{ host: directory, guest: "/" }])).toEqual(notPlain)
      expect(yield* refused([{ host: directory, guest: "/mnt/../etc" }])).toEqual(notPlain)
      expect(yield* refused([{ host: directory, guest: "/mnt/x" }, { host: directory, guest: "/mnt/x" }])).toEqual([
        "mounts: two mounts at the guest path /mnt/x"
      ])
    }))
})
