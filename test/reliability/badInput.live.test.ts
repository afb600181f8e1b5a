/**
 * Bad input on a live sandbox: each gives a typed error or the documented behaviour, and
 * the sandbox goes on serving. (Bad layer options: test/options.test.ts and
 * test/exec.live.test.ts; bad assets: test/assets.test.ts; garbage frames and transcripts:
 * test/protocol.test.ts and test/transcript.test.ts.)
 */
import { expect, layer } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { V86Box } from "../../src/index.ts"
import { MAX_PAYLOAD_BYTES } from "../../src/internal/protocol.ts"

layer(V86Box.layer(), { timeout: "120 seconds", excludeTestServices: true })("bad input", (it) => {
  it.scoped("a NUL byte in a command is InvalidOptions, from exec and from start", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const fromExec = yield* Effect.flip(box.exec("echo a\0b"))
      const fromStart = yield* Effect.flip(box.start("echo a\0b"))
      for (const error of [fromExec, fromStart]) {
        expect(error._tag).toBe("InvalidOptions")
        expect(error.message).toContain("command: must not contain a NUL byte")
      }
      expect((yield* box.exec("echo next")).stdout).toBe("next\n")
    }))

  it.effect("a 1 MB command is InvalidOptions naming the 65536-byte limit; one that fits runs", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const huge = yield* Effect.flip(box.exec(`echo ${"x".repeat(1024 * 1024)}`))
      expect(huge._tag).toBe("InvalidOptions")
      expect(huge.message).toContain(String(MAX_PAYLOAD_BYTES))
      // The limit is in UTF-8 bytes: 40,000 three-byte characters do not fit either.
      expect((yield* Effect.flip(box.exec(`echo ${"日".repeat(40_000)}`)))._tag).toBe("InvalidOptions")
      const fits = yield* box.exec(`printf %s ${"x".repeat(60_000)} | wc -c`)
      expect(fits.stdout.trim()).toBe("60000")
      expect((yield* box.status).pending).toBe(0)
    }))

  it.scoped("invalid UTF-8 output: exec replaces it with U+FFFD, start gives the exact bytes", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const command = "printf 'a\\377b\\300\\n'; printf '\\355\\240\\200' >&2"
      const result = yield* box.exec(command)
      expect(result).toEqual({ exitCode: 0, stdout: "a\uFFFDb\uFFFD\n", stderr: "\uFFFD\uFFFD\uFFFD" })
      const process = yield* box.start(command)
      const [stdout, stderr] = yield* Effect.all([Stream.runCollect(process.stdout), Stream.runCollect(process.stderr)], {
        concurrency: 2
      })
      expect([...Buffer.concat(Chunk.toArray(stdout))]).toEqual([0x61, 0xff, 0x62, 0xc0, 0x0a])
      expect([...Buffer.concat(Chunk.toArray(stderr))]).toEqual([0xed, 0xa0, 0x80])
    }))

  it.effect("a command that reads stdin when none was given reads EOF at once", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const result = yield* box.exec("cat; read -r line; echo \"read exit $?\"; head -c 10 | wc -c", { timeout: "60 seconds" })
      expect(result).toEqual({ exitCode: 0, stdout: "read exit 1\n0\n", stderr: "" })
    }))
})
