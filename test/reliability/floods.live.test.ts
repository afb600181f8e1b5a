/**
 * Output floods: a command that writes without end is stopped at the output limit with
 * the host's memory barely moving, and a slow reader of `start()`'s stream makes the
 * guest's writer wait instead of piling output up on the host.
 */
import { expect, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { V86Box } from "../../src/index.ts"
import { megabytes, report, withRssSampling } from "./support.ts"

/** What the issue promises: host RSS grows by at most this much during a flood. */
const promisedRssGrowthBytes = 100 * 1024 * 1024

/**
 * The guest's writer: 64 KiB at a time, forever, counting each write that completed in
 * /tmp/written (the guest kernel has no per-process I/O accounting to ask instead).
 */
const countingWriter = [
  "chunk=$(head -c 65536 /dev/zero | tr '\\0' x)",
  "n=0",
  "while :; do printf %s \"$chunk\"; n=$((n + 1)); echo $n > /tmp/written; done"
].join("\n")

/** The reader takes this much, a chunk every 100 ms, then stops reading. */
const slowlyReadBytes = 2 * 1024 * 1024

/**
 * Some output first: the emulator's own memory settles (its code is compiled further
 * after boot) before the host's RSS is compared. And a flood inside the guest first: a
 * resumed guest's free pages cost the host nothing until the guest first writes them,
 * and a first flood makes it write ~50 MB of them (pipe buffers cycling through its
 * free memory). That is the guest's RAM becoming resident, bounded by `memoryMB` and the
 * same for any heavy first command; what is measured here is what the host holds
 * because of the output.
 */
const warmUp = "head -c 256M /dev/zero | wc -c; head -c 4M /dev/zero | wc -c"

const writtenByGuest = (box: V86Box.Service) =>
  Effect.map(box.exec("cat /tmp/written"), (result) => Number(result.stdout.trim()) * 65536)

layer(V86Box.layer(), { timeout: "120 seconds", excludeTestServices: true })("output floods", (it) => {
  it.effect("1 GB of output with the default limit: OutputLimitExceeded at 16 MiB, host RSS grows by at most 100 MB", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      yield* box.exec(warmUp)
      const started = Date.now()
      const { growthBytes, result } = yield* withRssSampling(box.exec("head -c 1G /dev/zero"))
      const error = result._tag === "Left" ? result.left : undefined
      report("1 GB flood", { rssGrowthMB: megabytes(growthBytes), millis: Date.now() - started, ended: error?._tag })
      expect(error?._tag).toBe("OutputLimitExceeded")
      if (error?._tag === "OutputLimitExceeded") {
        expect(error.maxOutputBytes).toBe(16 * 1024 * 1024)
        expect(error.stdout.length).toBe(16 * 1024 * 1024)
      }
      expect(growthBytes).toBeLessThan(promisedRssGrowthBytes)
      expect((yield* box.exec("echo next")).stdout).toBe("next\n")
    }), 300_000)

  it.scoped("a slow reader of start()'s stdout slows the writer: it waits in the guest, host memory stays flat", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      yield* box.exec(warmUp)
      const process = yield* box.start(countingWriter)
      let consumed = 0
      const { growthBytes } = yield* withRssSampling(
        process.stdout.pipe(
          Stream.tap((bytes) => Effect.as(Effect.sleep("100 millis"), (consumed += bytes.length))),
          Stream.takeUntil(() => consumed >= slowlyReadBytes),
          Stream.runDrain
        )
      )
      // Nobody reads now: the writer fills what the flow-control window still allows,
      // then waits for good. Two equal counts 2 s apart say it is waiting.
      let written = yield* writtenByGuest(box)
      let writtenLater = -1
      for (let attempt = 0; attempt < 10 && writtenLater !== written; attempt++) {
        if (writtenLater >= 0) written = writtenLater
        yield* Effect.sleep("2 seconds")
        writtenLater = yield* writtenByGuest(box)
      }
      const ahead = writtenLater - consumed
      report("slow reader", {
        consumedMB: megabytes(consumed),
        writtenByGuestMB: megabytes(writtenLater),
        guestAheadKB: Math.round(ahead / 1024),
        rssGrowthMB: megabytes(growthBytes)
      })
      expect(writtenLater).toBe(written)
      // At most the agent's output window (256 KiB), its read buffer and the pipe (64 KiB) ahead.
      expect(ahead).toBeLessThan(1024 * 1024)
      expect(growthBytes).toBeLessThan(promisedRssGrowthBytes)
      yield* process.kill("SIGKILL")
    }), 120_000)
})
