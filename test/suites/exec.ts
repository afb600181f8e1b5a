/**
 * The core behaviour of exec and start. The same suite runs against a live VM
 * (test/exec.live.test.ts) and against its recording (test/exec.replay.test.ts).
 */
import { expect, type Vitest } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import { V86Box } from "../../src/index.ts"

const concatChunks = (chunks: Chunk.Chunk<Uint8Array>): Uint8Array => Buffer.concat(Chunk.toArray(chunks))

export interface SuiteDriver {
  /** True against a live VM: real time passes, and wall-clock bounds can be checked. */
  readonly live: boolean
  /** Lets `duration` pass for the sandbox's timers (real waiting live, the TestClock in replay). */
  readonly elapse: (duration: Duration.DurationInput) => Effect.Effect<void>
}

export const execSuite = (it: Vitest.MethodsNonLive<V86Box, boolean>, driver: SuiteDriver) => {
  it.effect("echo hello: stdout and exit code 0", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const result = yield* box.exec("echo hello")
      expect(result).toEqual({ exitCode: 0, stdout: "hello\n", stderr: "" })
    }))

  it.effect("stderr is separate and a non-zero exit is a result", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const result = yield* box.exec("echo e >&2; exit 3")
      expect(result).toEqual({ exitCode: 3, stdout: "", stderr: "e\n" })
    }))

  it.scoped("all 256 byte values come through start exactly", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      // One printf with all 256 octal escapes: a loop would fork 256 times.
      const escapes = Array.from({ length: 256 }, (_, byte) => `\\${byte.toString(8).padStart(3, "0")}`).join("")
      const process = yield* box.start(`printf '${escapes}'`)
      const bytes = concatChunks(yield* Stream.runCollect(process.stdout))
      expect(Array.from(bytes)).toEqual(Array.from({ length: 256 }, (_, index) => index))
      expect(yield* process.exitCode).toBe(0)
    }))

  it.effect("UTF-8 text is intact", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const text = "héllo wörld ✓ 日本語 🎉"
      const result = yield* box.exec(`printf '%s' '${text}'; printf '%s' '${text}' | wc -c >&2`)
      expect(result.stdout).toBe(text)
      expect(result.stderr.trim()).toBe(String(Buffer.byteLength(text)))
    }))

  it.effect("a timeout kills the command's whole process group; the next command works", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const started = Date.now()
      const running = yield* Effect.fork(box.exec("sleep 100 & sleep 100; echo never", { timeout: "1 second" }))
      yield* driver.elapse("1 second")
      const error = yield* Effect.flip(Fiber.join(running))
      expect(error._tag).toBe("CommandTimeout")
      if (driver.live) expect(Date.now() - started).toBeLessThan(2000)
      const left = yield* box.exec("pgrep -x sleep; echo status $?")
      expect(left.stdout).toBe("status 1\n")
      expect((yield* box.exec("echo next")).stdout).toBe("next\n")
    }))

  it.effect("a command that ends within its timeout is a plain result", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const result = yield* box.exec("echo quick; exit 2", { timeout: "30 seconds" })
      expect(result).toEqual({ exitCode: 2, stdout: "quick\n", stderr: "" })
    }))

  it.effect("the timeout error carries the output produced before it", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const running = yield* Effect.fork(
        box.exec("echo partial; echo oops >&2; touch /tmp/partial-written; sleep 100", { timeout: "5 seconds" })
      )
      // Let the timeout fire only once the output exists (the TestClock would fire it at once).
      yield* box.exec("for i in $(seq 250); do [ -e /tmp/partial-written ] && break; sleep 0.02; done")
      yield* driver.elapse("5 seconds")
      const error = yield* Effect.flip(Fiber.join(running))
      if (error._tag !== "CommandTimeout") throw new Error(`expected CommandTimeout, got ${error._tag}`)
      expect(error.stdout).toBe("partial\n")
      expect(error.stderr).toBe("oops\n")
      expect(error.command).toContain("sleep 100")
    }))

  it.effect("interrupting the fiber running exec kills the guest command", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const fiber = yield* Effect.fork(box.exec("sleep 101"))
      // Wait until the guest really runs it, then interrupt.
      // The [1] keeps pgrep from matching the shell that runs it.
      yield* box.exec("while ! pgrep -f 'sleep 10[1]' >/dev/null; do sleep 0.05; done")
      yield* Fiber.interrupt(fiber)
      const left = yield* box.exec("pgrep -f 'sleep 10[1]'; echo status $?")
      expect(left.stdout).toBe("status 1\n")
    }))

  it.effect("a command killed as soon as it starts ends, with everything it started", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      // The kill follows the start at once: the command's process may not have made its
      // own process group yet (a forked command makes it first thing), and must die anyway.
      const exitCode = yield* Effect.scoped(Effect.gen(function*() {
        const process = yield* box.start("sleep 102 & sleep 102")
        yield* process.kill("SIGKILL")
        return yield* process.exitCode
      }))
      expect(exitCode).toBe(137)
      const left = yield* box.exec("pgrep -f 'sleep 10[2]'; echo status $?")
      expect(left.stdout).toBe("status 1\n")
    }))

  it.effect("20 concurrent execs from 20 fibers are each correct", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const results = yield* Effect.forEach(
        Array.from({ length: 20 }, (_, index) => index),
        (index) => box.exec(`echo out${index}; echo err${index} >&2; exit ${index % 7}`),
        { concurrency: "unbounded" }
      )
      results.forEach((result, index) =>
        expect(result).toEqual({ exitCode: index % 7, stdout: `out${index}\n`, stderr: `err${index}\n` })
      )
    }))

  it.effect("100 MB of output with maxOutputBytes 1 MB is OutputLimitExceeded, memory stays bounded", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const rssBefore = process.memoryUsage().rss
      const error = yield* box.exec("yes | head -c 100000000", { maxOutputBytes: 1_000_000 }).pipe(Effect.flip)
      const rssGrowth = process.memoryUsage().rss - rssBefore
      if (error._tag !== "OutputLimitExceeded") throw new Error(`expected OutputLimitExceeded, got ${error._tag}`)
      expect(error.stdout).toBe("y\n".repeat(500_000))
      expect(rssGrowth).toBeLessThan(100 * 1024 * 1024)
      expect((yield* box.exec("echo alive")).stdout).toBe("alive\n")
    }))

  it.effect("a command reading stdin with none given gets EOF", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const result = yield* box.exec("cat; read line; echo \"read status $?\"")
      expect(result).toEqual({ exitCode: 0, stdout: "read status 1\n", stderr: "" })
    }))

  it.effect("death by signal reports the signal", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const result = yield* box.exec("kill -TERM $$")
      expect(result).toEqual({ exitCode: 143, signal: "SIGTERM", stdout: "", stderr: "" })
    }))

  it.effect("a missing working directory reads like a shell failure", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const result = yield* box.exec("pwd", { cwd: "/no/such/dir" })
      expect(result.exitCode).toBe(127)
      expect(result.stderr).toContain("/no/such/dir")
    }))

  it.effect("status reports a ready sandbox", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const status = yield* box.status
      expect(status.ready).toBe(true)
      expect(status.pending).toBe(0)
      expect(status.agentVersion).toMatch(/^\d+\.\d+\.\d+/)
    }))
}
