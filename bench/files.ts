/**
 * File transfer throughput through the guest filesystem (npx tsx bench/files.ts):
 * writeFile and readFile of random bytes, checked with sha256 on both sides.
 *
 * Options: --mb N (default 50), --runs N (default 3).
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { createHash, randomBytes } from "node:crypto"
import { loadavg } from "node:os"
import { parseArgs } from "node:util"
import * as GuestFileSystem from "../src/GuestFileSystem.ts"
import { V86Box } from "../src/index.ts"

const { values: flags } = parseArgs({
  options: { mb: { type: "string", default: "50" }, runs: { type: "string", default: "3" } }
})
const bytes = Number(flags.mb) * 1_000_000
const runs = Number(flags.runs)
const sha256 = (data: Uint8Array) => createHash("sha256").update(data).digest("hex")

const program = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const box = yield* V86Box
  const data = new Uint8Array(randomBytes(bytes))
  const expected = sha256(data)
  for (let run = 1; run <= runs; run++) {
    const load = loadavg()[0]!.toFixed(1)
    const writeStarted = performance.now()
    yield* fs.writeFile("/tmp/bench", data)
    const writeSeconds = (performance.now() - writeStarted) / 1000
    const guestHash = (yield* box.exec("sha256sum /tmp/bench")).stdout.slice(0, 64)
    const readStarted = performance.now()
    const back = yield* fs.readFile("/tmp/bench")
    const readSeconds = (performance.now() - readStarted) / 1000
    yield* fs.remove("/tmp/bench")
    const intact = guestHash === expected && sha256(back) === expected
    console.log(
      `run ${run}: write ${(bytes / 1e6 / writeSeconds).toFixed(2)} MB/s, read ${(bytes / 1e6 / readSeconds).toFixed(2)} MB/s, ` +
        `${intact ? "intact" : "CORRUPTED"} (host load ${load})`
    )
  }
})

// The file lives in the guest's tmpfs (half the guest's RAM).
const sandbox = Layer.provideMerge(GuestFileSystem.layer, V86Box.layer({ memoryMB: 256 }))

Effect.runPromise(program.pipe(Effect.provide(sandbox))).catch((error) => {
  console.error(String(error))
  process.exit(1)
})
