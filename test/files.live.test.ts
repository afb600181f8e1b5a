/**
 * Files, stdin, environment and users against a live VM (one boot for the file), and
 * 50 MB through the filesystem each way, checked with sha256 in the guest and on the host.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import { expect, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
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
