/**
 * Files, stdin, environment and users against a live VM (one boot for the file), and
 * 50 MB through the filesystem each way, checked with sha256 in the guest and on the host.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import { expect, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as fc from "fast-check"
import { createHash, randomBytes } from "node:crypto"
import * as GuestFileSystem from "../src/GuestFileSystem.ts"
import { V86Box } from "../src/index.ts"
import { environmentSuite, filesSuite, stdinSuite } from "./suites/files.ts"

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")

// 256 MiB: the 50 MB file lives in the guest's tmpfs (half the RAM), beside the root filesystem.
const sandbox = Layer.provideMerge(GuestFileSystem.layer, V86Box.layer({ memoryMB: 256 }))

layer(sandbox, { excludeTestServices: true, timeout: "120 seconds" })("files, stdin, env and users on a live VM", (it) => {
  filesSuite(it)
  stdinSuite(it)
  environmentSuite(it)

  it.effect("as another user, large files go in through the host's staging share: owned by that user, appended, staged copy gone", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const fs = GuestFileSystem.make(box, { user: "user" })
      const data = new Uint8Array(randomBytes(300_000))
      yield* fs.writeFile("/home/user/staged", data)
      yield* fs.writeFile("/home/user/staged", data, { flag: "a" })
      const info = yield* fs.stat("/home/user/staged")
      expect(info.uid).toEqual(Option.some(1000))
      expect(Number(info.size)).toBe(600_000)
      expect((yield* box.exec("sha256sum < /home/user/staged")).stdout).toBe(`${sha256(Buffer.concat([data, data]))}  -\n`)
      expect((yield* box.exec("ls -A /run/v86box/host/staging")).stdout).toBe("")
      // The guest's permissions still hold: the user cannot write where root owns the directory.
      const denied = yield* Effect.flip(fs.writeFile("/root/staged", data))
      expect(denied._tag === "SystemError" && denied.reason).toBe("PermissionDenied")
    }))

  it.effect.prop(
    "files around the console/9p threshold (64 KiB) round-trip under arbitrary names",
    {
      name: fc.string({ unit: fc.oneof(fc.constantFrom(" ", "'", "\"", "\n", "é", "🎉"), fc.fullUnicode()), minLength: 1, maxLength: 16 })
        .filter((name) => !name.includes("/") && !name.includes("\0") && name !== "." && name !== ".."),
      size: fc.integer({ min: 64 * 1024 - 16, max: 64 * 1024 + 16 }),
      seed: fc.integer({ min: 0, max: 255 })
    },
    ({ name, seed, size }) =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const data = Uint8Array.from({ length: size }, (_, index) => (index * 31 + seed) % 256)
        yield* fs.makeDirectory("/tmp/threshold", { recursive: true })
        yield* fs.writeFile(`/tmp/threshold/${name}`, data)
        expect(sha256(yield* fs.readFile(`/tmp/threshold/${name}`))).toBe(sha256(data))
      }),
    { timeout: 300_000, fastCheck: { numRuns: 12 } }
  )

  it.effect("50 MB written and read back intact (sha256 in the guest and on the host)", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const box = yield* V86Box
      const data = new Uint8Array(randomBytes(50_000_000))
      const expected = sha256(data)

      const writeStarted = performance.now()
      yield* fs.writeFile("/tmp/big", data)
      const writeSeconds = (performance.now() - writeStarted) / 1000
      expect((yield* box.exec("sha256sum /tmp/big")).stdout).toBe(`${expected}  /tmp/big\n`)

      const readStarted = performance.now()
      const back = yield* fs.readFile("/tmp/big")
      const readSeconds = (performance.now() - readStarted) / 1000
      expect(back.length).toBe(data.length)
      expect(sha256(back)).toBe(expected)
      yield* fs.remove("/tmp/big")
      // Throughput is for the benchmark (bench/files.ts) to judge; here it is only reported.
      console.log(`50 MB: write ${(50 / writeSeconds).toFixed(2)} MB/s (${writeSeconds.toFixed(1)} s), read ${(50 / readSeconds).toFixed(2)} MB/s (${readSeconds.toFixed(1)} s)`)
    }), 900_000)
})
