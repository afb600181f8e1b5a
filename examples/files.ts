/**
 * Files in and out of the sandbox: write a CSV into the guest, sort it there with GNU
 * tools, read the result back; feed a command on stdin; run one as an unprivileged user.
 *
 *   npx tsx examples/files.ts
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
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
})

const sandbox = Layer.provideMerge(GuestFileSystem.layer, V86Box.layer())

Effect.runPromise(program.pipe(Effect.provide(sandbox))).catch((error) => {
  console.error(String(error))
  process.exit(1)
})
