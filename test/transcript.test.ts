/**
 * Transcripts: the file format round-trips any bytes and timings, and a scripted
 * transcript replays through the real client and service to exactly its results.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as fc from "fast-check"
import { V86Box } from "../src/index.ts"
import { Testkit, Transcript, TranscriptMismatch, UnconsumedEvents } from "../testkit/index.ts"
import { script } from "../testkit/Script.ts"

const eventArbitrary: fc.Arbitrary<Transcript.Event> = fc.oneof(
  fc.record({
    t: fc.double({ min: 0, max: 1e6, noNaN: true }),
    d: fc.constantFrom("to" as const, "from" as const),
    data: fc.uint8Array({ maxLength: 512 })
  }),
  fc.record({ t: fc.double({ min: 0, max: 1e6, noNaN: true }), d: fc.constant("log" as const), data: fc.uint8Array({ maxLength: 64 }) }),
  fc.record({ t: fc.nat(), d: fc.constant("mark" as const), label: fc.string() })
)

const header: Transcript.Header = script([]).header

describe("transcript format", () => {
  it.effect.prop("render then parse gives back every byte and time", [fc.array(eventArbitrary, { maxLength: 30 })], ([events]) =>
    Effect.gen(function*() {
      const text = Transcript.render({ header, events })
      const parsed = yield* Transcript.parse(text)
      expect(parsed.header).toEqual(header)
      expect(parsed.events).toEqual(events.map((event) => ("data" in event ? { ...event, data: new Uint8Array(event.data) } : event)))
    }))

  it.effect("a broken line is a TranscriptError naming the line", () =>
    Effect.gen(function*() {
      const text = Transcript.render({ header, events: [{ t: 1, d: "to", data: new Uint8Array([1, 2]) }] }) + "{\"t\":-1}\n"
      const error = yield* Effect.flip(Transcript.parse(text, "broken.ndjson"))
      expect(error._tag).toBe("TranscriptError")
      expect(error.line).toBe(3)
      expect(error.message).toContain("broken.ndjson, line 3")
    }))

  it.effect("an empty file and a foreign header are TranscriptErrors", () =>
    Effect.gen(function*() {
      expect((yield* Effect.flip(Transcript.parse(""))).line).toBe(1)
      expect((yield* Effect.flip(Transcript.parse("{\"hello\":1}\n"))).reason).toContain("v86box")
    }))

  it.effect.prop("a valid transcript with characters replaced, deleted or inserted parses or is a TranscriptError", [
    fc.array(eventArbitrary, { maxLength: 8 }),
    fc.array(fc.record({ at: fc.nat(), deleteCount: fc.nat({ max: 8 }), insert: fc.string({ maxLength: 8 }) }), { minLength: 1, maxLength: 4 })
  ], ([events, edits]) =>
    Effect.gen(function*() {
      let text = Transcript.render({ header, events })
      for (const edit of edits) {
        const at = edit.at % (text.length + 1)
        text = text.slice(0, at) + edit.insert + text.slice(at + edit.deleteCount)
      }
      const result = yield* Effect.either(Transcript.parse(text))
      if (result._tag === "Left") expect(result.left._tag).toBe("TranscriptError")
    }))

  it.effect.prop("fuzzed transcript text never escapes as an untyped error", [fc.string({ maxLength: 300 })], ([text]) =>
    Effect.gen(function*() {
      const result = yield* Effect.either(Transcript.parse(text))
      if (result._tag === "Left") expect(result.left._tag).toBe("TranscriptError")
    }))
})

const replayed = (transcript: Transcript.Transcript, options: Testkit.ReplayOptions = {}) =>
  Testkit.layerReplay(transcript, { fingerprint: "ignore", ...options })

const resultArbitrary = fc.record({
  stdout: fc.uint8Array({ maxLength: 20_000 }),
  stderr: fc.uint8Array({ maxLength: 5_000 }),
  exitCode: fc.integer({ min: 0, max: 255 })
})

describe("replaying a scripted transcript", () => {
  it.effect.prop("exec returns exactly the scripted output and exit codes", [fc.array(resultArbitrary, { minLength: 1, maxLength: 4 })], ([results]) =>
    Effect.gen(function*() {
      const box = yield* V86Box
      for (const [index, result] of results.entries()) {
        const got = yield* box.exec(`command ${index}`)
        expect(got.exitCode).toBe(result.exitCode)
        expect(got.stdout).toBe(new TextDecoder().decode(result.stdout))
        expect(got.stderr).toBe(new TextDecoder().decode(result.stderr))
      }
    }).pipe(Effect.provide(replayed(script(results.map((result, index) => ({ command: `command ${index}`, ...result })))))), { fastCheck: { numRuns: 30 } })

  it.effect.prop("start streams exactly the scripted bytes", [resultArbitrary], ([result]) =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const process = yield* box.start("streamed")
      const [stdout, stderr] = yield* Effect.all([Stream.runCollect(process.stdout), Stream.runCollect(process.stderr)], { concurrency: 2 })
      expect(new Uint8Array(Buffer.concat(Chunk.toArray(stdout)))).toEqual(new Uint8Array(result.stdout))
      expect(new Uint8Array(Buffer.concat(Chunk.toArray(stderr)))).toEqual(new Uint8Array(result.stderr))
      expect(yield* process.exitCode).toBe(result.exitCode)
    }).pipe(Effect.scoped, Effect.provide(replayed(script([{ command: "streamed", ...result }])))), { fastCheck: { numRuns: 30 } })

  it.effect("one exec effect run twice gives each run its own output", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const echo = box.exec("echo")
      expect(yield* echo).toEqual({ exitCode: 0, stdout: "first\n", stderr: "" })
      expect(yield* echo).toEqual({ exitCode: 1, stdout: "second\n", stderr: "e\n" })
    }).pipe(Effect.provide(replayed(script([
      { command: "echo", stdout: "first\n" },
      { command: "echo", stdout: "second\n", stderr: "e\n", exitCode: 1 }
    ])))))

  it.effect("a signal death replays as exit code and signal name", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      expect(yield* box.exec("killed")).toEqual({ exitCode: 137, signal: "SIGKILL", stdout: "", stderr: "" })
    }).pipe(Effect.provide(replayed(script([{ command: "killed", signal: 9 }])))))

  it.effect("a command the transcript did not record fails with TranscriptMismatch showing both sides", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Effect.gen(function*() {
        const box = yield* V86Box
        return yield* box.exec("echo something else")
      }).pipe(Effect.provide(replayed(script([{ command: "echo recorded" }]), { unconsumed: "ignore" }))))
      const defect = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
      expect(defect).toBeInstanceOf(TranscriptMismatch)
      const mismatch = defect as TranscriptMismatch
      expect(mismatch.expected).toContain("echo recorded")
      expect(mismatch.actual).toContain("echo something else")
      expect(mismatch.message).toContain("npm run transcripts:record")
    }))

  it.effect("recorded commands left unrun fail the scope with UnconsumedEvents", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Effect.scoped(Layer.build(replayed(script([{ command: "never run" }])))))
      const defect = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
      expect(defect).toBeInstanceOf(UnconsumedEvents)
    }))
})

describe("fingerprints and redaction", () => {
  it.effect("a transcript recorded by another image or memory size is StaleTranscript, naming the change and the fix", () =>
    Effect.gen(function*() {
      const recorded = yield* Testkit.readTranscript("transcripts/exec.ndjson")
      const changed = {
        ...recorded,
        header: { ...recorded.header, fingerprint: { ...recorded.header.fingerprint, memoryMB: 4096 } }
      }
      const error = yield* Effect.flip(Effect.scoped(Layer.build(Testkit.layerReplay(changed))))
      expect(error._tag).toBe("StaleTranscript")
      expect(error.message).toContain("memoryMB was 4096")
      expect(error.message).toContain("npm run transcripts:record")
    }))

  it("replaceText scrubs a secret from guest output and keeps every byte length", () => {
    const [, , , , , stdoutEvent] = script([{ command: "cat secret", stdout: "token=sk-12345678 ok" }]).events
    const redacted = Testkit.replaceText("sk-12345678", "REDACTED")(stdoutEvent!)
    if (redacted.d !== "from" || stdoutEvent!.d !== "from") throw new Error("expected guest output")
    const text = Buffer.from(redacted.data).toString("latin1")
    expect(text).toContain("token=REDACTED*** ok")
    expect(text).not.toContain("sk-12345678")
    expect(redacted.data.length).toBe(stdoutEvent!.data.length)
  })
})
