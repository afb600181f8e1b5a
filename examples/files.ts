/**
 * Files in and out of the sandbox: write a CSV into the guest, sort it there with GNU
 * tools, read the result back; feed a command on stdin; run one as an unprivileged user;
 * share host directories with the guest (one read-only, one writable); move a large file in.
 *
 *   npx tsx examples/files.ts
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { createHash } from "node:crypto"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as GuestFileSystem from "../src/GuestFileSystem.ts"
import { V86Box } from "../src/index.ts"

const program = Effect.gen(function*() {
  const box = yield* V86Box
  const fs = yield* FileSystem.FileSystem // the guest's filesystem, not the host's

  yield* fs.makeDirectory("/tmp/work", { recursive: true })
  yield* fs.writeFileString("/tmp/work/scores.csv", "carol,71\nalice,93\nbob,88\n")

  const sorted = yield* box.exec("sort -t, -k2 -nr scores.csv > ranking.txt && wc -l < ranking.txt", {
    cwd: "/tmp/work"
  })
  console.log(`lines sorted  → ${sorted.stdout.trim()}`)
  console.log(`ranking.txt   → ${(yield* fs.readFileString("/tmp/work/ranking.txt")).trim().split("\n").join(" | ")}`)

  const hashed = yield* box.exec("sha256sum", { stdin: new Uint8Array([0, 1, 2, 255]) })
  console.log(`sha256 of 4 bytes on stdin → ${hashed.stdout.slice(0, 16)}…`)

  const asUser = yield* box.exec('echo "$GREETING from $(id -un) in $PWD"; touch /root/nope', {
    user: "user",
    env: { GREETING: "hi" }
  })
  console.log(`as user       → ${asUser.stdout.trim()}; ${asUser.stderr.trim()}`)

  const missing = yield* Effect.flip(fs.readFile("/tmp/work/missing.txt"))
  console.log(`missing file  → ${missing.message}`)

  // Host directories, mounted before the sandbox was ready (see `mounts` below).
  const counted = yield* box.exec("wc -l /project/*.txt | tail -1 > /results/total.txt; echo hacked > /project/a.txt")
  console.log(`host results  → ${readFileSync(join(host, "results", "total.txt"), "utf8").trim()}`)
  console.log(`read-only     → ${counted.stderr.trim()}`)

  // From 64 KiB, files go in through a host share (9p) rather than the console.
  const big = new Uint8Array(8_000_000).map((_, index) => index % 251)
  const started = performance.now()
  yield* fs.writeFile("/tmp/big.bin", big)
  const seconds = (performance.now() - started) / 1000
  const guestHash = (yield* box.exec("sha256sum < /tmp/big.bin")).stdout.slice(0, 64)
  const intact = guestHash === createHash("sha256").update(big).digest("hex")
  console.log(`8 MB in       → ${intact ? "intact" : "CORRUPTED"}, ${(8 / seconds).toFixed(1)} MB/s`)
})

// A host "project" the guest may read, and a directory it may write its results to.
const host = mkdtempSync(join(tmpdir(), "v86box-example-"))
mkdirSync(join(host, "project"))
mkdirSync(join(host, "results"))
writeFileSync(join(host, "project", "a.txt"), "one\ntwo\n")
writeFileSync(join(host, "project", "b.txt"), "three\n")

const sandbox = Layer.provideMerge(
  GuestFileSystem.layer,
  V86Box.layer({
    mounts: [
      { host: join(host, "project"), guest: "/project", readOnly: true },
      { host: join(host, "results"), guest: "/results", readOnly: false }
    ]
  })
)

Effect.runPromise(program.pipe(Effect.provide(sandbox)))
  .catch((error) => {
    console.error(String(error))
    process.exitCode = 1
  })
  .finally(() => rmSync(host, { recursive: true, force: true }))
