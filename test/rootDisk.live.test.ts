/**
 * The root disk is one file on the host that every sandbox reads (src/internal/
 * fileDisk.mjs). A guest that writes its raw disk changes its own view only: not the
 * file, not a sandbox running beside it, not the next one; and its snapshot keeps what
 * it wrote, as it keeps everything else of that machine. And what is on it beyond
 * bookworm's packages: jq 1.7, built from trixie's source (image/build.sh, build_jq).
 */
import { describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { createHash } from "node:crypto"
import { readFileSync } from "node:fs"
import * as Assets from "../src/Assets.ts"
import { V86Box, type V86BoxOptions } from "../src/index.ts"

const withBox = <A, E>(options: V86BoxOptions, use: (box: V86Box.Service) => Effect.Effect<A, E>) =>
  Effect.scoped(Effect.flatMap(Layer.build(V86Box.layer(options)), (context) => use(Context.get(context, V86Box))))

// 8 sectors in the middle of the disk, read past the guest's page cache.
const SECTORS = "bs=512 skip=2000 count=8 iflag=direct"
const readSectors = `dd if=/dev/sda ${SECTORS} status=none | sha256sum | cut -c1-64`
const zeroSectors = "dd if=/dev/zero of=/dev/sda bs=512 seek=2000 count=8 oflag=direct conv=notrunc status=none"
const zerosSha256 = createHash("sha256").update(new Uint8Array(4096)).digest("hex")

describe("the shared root disk", () => {
  it.live("a guest's raw writes stay in its own machine and its snapshot", () =>
    Effect.gen(function*() {
      const disk = (yield* Assets.resolveNode()).rootfs!
      const fileBytes = readFileSync(disk.path)
      const original = createHash("sha256").update(fileBytes.subarray(2000 * 512, 2008 * 512)).digest("hex")
      expect(original).not.toBe(zerosSha256)

      const { writer, neighbour, snapshot } = yield* Effect.all([
        withBox({}, (box) =>
          Effect.gen(function*() {
            const wrote = yield* box.exec(zeroSectors)
            expect(wrote.stderr).toBe("")
            expect(wrote.exitCode).toBe(0)
            const writer = (yield* box.exec(readSectors)).stdout.trim()
            return { writer, snapshot: yield* box.snapshot() }
          })),
        withBox({}, (box) => Effect.map(box.exec(`sleep 1; ${readSectors}`), (result) => result.stdout.trim()))
      ], { concurrency: 2 }).pipe(Effect.map(([{ snapshot, writer }, neighbour]) => ({ writer, neighbour, snapshot })))
      expect(writer).toBe(zerosSha256)
      expect(neighbour).toBe(original)

      const next = yield* withBox({}, (box) => Effect.map(box.exec(readSectors), (result) => result.stdout.trim()))
      expect(next).toBe(original)
      const fork = yield* withBox({ fromSnapshot: snapshot }, (box) => Effect.map(box.exec(readSectors), (result) => result.stdout.trim()))
      expect(fork).toBe(zerosSha256)
      // The file itself is what it was.
      expect(createHash("sha256").update(readFileSync(disk.path)).digest("hex")).toBe(disk.sha256)
    }), 300_000)

  it.live("jq is 1.7 (bookworm has 1.6), with its regular expressions and number literals", () =>
    withBox({}, (box) =>
      Effect.gen(function*() {
        const result = yield* box.exec(
          `jq --version; echo '{"name":"x-y","n":1.000}' | jq -c '[(.name | test("x.")), (.name | sub("-"; "+")), .n]'`
        )
        expect(result.stderr).toBe("")
        // 1.7 keeps a number literal as written (1.6 printed 1) and says its version so.
        expect(result.stdout).toBe('jq-1.7\n[true,"x+y",1.000]\n')
      })), 120_000)
})
