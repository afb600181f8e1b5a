/**
 * Layers that provide `V86Box` from a recorded transcript, or record one from a live VM.
 * Only the Machine is replaced: replayed bytes go through the real agent client and the
 * real service code.
 *
 * @since 0.1.0
 * @module
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { existsSync } from "node:fs"
import { mkdir, readFile, rename, writeFile } from "node:fs/promises"
import { dirname } from "node:path"
import * as Assets from "../src/Assets.ts"
import type { AssetError, BootTimeout, InvalidOptions, MachineError, SnapshotError } from "../src/Errors.ts"
import * as Box from "../src/internal/box.ts"
import { PROTOCOL_VERSION } from "../src/internal/protocol.ts"
import * as V86Machine from "../src/internal/v86Machine.ts"
import { type DecodedBoxOptions, decodeBoxOptions, type V86BoxOptions } from "../src/Options.ts"
import { V86Box } from "../src/V86Box.ts"
import { StaleTranscript, TranscriptMissing, UnconsumedEvents } from "./Errors.ts"
import { Recorder } from "./internal/recorder.ts"
import * as ReplayMachine from "./internal/replayMachine.ts"
import {
  type Event,
  FORMAT_VERSION,
  type Fingerprint,
  parse,
  render,
  type Transcript,
  TranscriptError
} from "./Transcript.ts"

/**
 * The v86 version the emulator runs, as a fingerprint part.
 *
 * @since 0.1.0
 * @category constants
 */
export const v86Version: string = V86Machine.v86Version

/**
 * Options of `layerReplay`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ReplayOptions {
  /** The sandbox options the test would give `V86Box.layer` (they are part of the fingerprint). */
  readonly options?: V86BoxOptions | undefined
  /** `"instant"` (default) or `"recorded"`: wait the recorded delays through Effect's Clock. */
  readonly timing?: "instant" | "recorded" | undefined
  /** What to do with recorded events the test never consumed: `"fail"` (default) or `"ignore"`. */
  readonly unconsumed?: "fail" | "ignore" | undefined
  /** `"check"` (default) fails with StaleTranscript when the image or options changed; `"ignore"` skips it (synthesised transcripts). */
  readonly fingerprint?: "check" | "ignore" | undefined
}

/**
 * Options of `layerRecord`.
 *
 * @since 0.1.0
 * @category models
 */
export interface RecordOptions {
  readonly options?: V86BoxOptions | undefined
  /** Called on every event before it is saved: scrub secrets here (see `replaceText`). */
  readonly redact?: ((event: Event) => Event) | undefined
}

/**
 * Errors of the testkit layers, besides the sandbox's own.
 *
 * @since 0.1.0
 * @category errors
 */
export type TestkitError = TranscriptError | StaleTranscript | TranscriptMissing

/**
 * Everything a testkit layer can fail with: the testkit's errors and the sandbox's.
 *
 * @since 0.1.0
 * @category errors
 */
export type LayerError = TestkitError | BootTimeout | AssetError | MachineError | InvalidOptions | SnapshotError

/**
 * Reads a transcript file.
 *
 * @since 0.1.0
 * @category constructors
 */
export const readTranscript = (file: string): Effect.Effect<Transcript, TranscriptError | TranscriptMissing> =>
  Effect.tryPromise({
    try: () => readFile(file, "utf8"),
    catch: (error) => new TranscriptMissing({ source: file, reason: (error as Error).message })
  }).pipe(Effect.flatMap((text) => parse(text, file)))

/**
 * What the current code and image would write in a transcript header.
 *
 * @since 0.1.0
 * @category constructors
 */
export const currentFingerprint = (options?: V86BoxOptions): Effect.Effect<Fingerprint, AssetError | InvalidOptions> =>
  Effect.flatMap(decodeBoxOptions(options), fingerprintFor)

const fingerprintFor = (decoded: DecodedBoxOptions): Effect.Effect<Fingerprint, AssetError> =>
  Effect.map(
    Assets.resolveNode({ assets: decoded.assets, assetsDir: decoded.assetsDir }),
    (assets) => fingerprintOf(assets, decoded.memoryMB ?? assets.memoryMB)
  )

const fingerprintOf = (assets: Assets.ResolvedAssets, memoryMB: number): Fingerprint => ({
  image: assets.fingerprint,
  protocol: PROTOCOL_VERSION,
  v86: v86Version,
  memoryMB
})

const compareFingerprints = (recorded: Fingerprint, current: Fingerprint): Array<string> =>
  (Object.keys(current) as Array<keyof Fingerprint>)
    .filter((key) => recorded[key] !== current[key])
    .map((key) => `${key} was ${JSON.stringify(recorded[key])}, is now ${JSON.stringify(current[key])}`)

/**
 * Provides `V86Box` from a transcript (a file path or a `Transcript` value), without a VM.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerReplay = (source: string | Transcript, replay: ReplayOptions = {}): Layer.Layer<V86Box, LayerError> =>
  Layer.scoped(
    V86Box,
    Effect.gen(function*() {
      const name = typeof source === "string" ? source : "(transcript value)"
      const transcript = typeof source === "string" ? yield* readTranscript(source) : source
      const decoded = yield* decodeBoxOptions(replay.options)
      if (replay.fingerprint !== "ignore") {
        const differences = compareFingerprints(transcript.header.fingerprint, yield* fingerprintFor(decoded))
        if (differences.length > 0) return yield* Effect.fail(new StaleTranscript({ source: name, differences }))
      }
      const machine = yield* ReplayMachine.make(transcript, name, { timing: replay.timing })
      if (replay.unconsumed !== "ignore") {
        yield* Effect.addFinalizer(() =>
          Effect.flatMap(machine.unconsumed, (left) =>
            left.length === 0
              ? Effect.void
              : Effect.die(new UnconsumedEvents({ source: name, eventIndexes: left.map(({ index }) => index) })))
        )
      }
      return yield* Box.connect(machine, decoded, yield* Clock.currentTimeMillis, transcript.header.guestInit)
    })
  )

/**
 * Boots a live VM and writes everything its console carries to `file` when the layer's
 * scope closes (atomically: a temporary file, then a rename).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerRecord = (file: string, record: RecordOptions = {}): Layer.Layer<V86Box, LayerError> =>
  Layer.scoped(
    V86Box,
    Effect.gen(function*() {
      const recorder = new Recorder()
      const guestInit = yield* Box.freshGuestInit
      let fingerprint: Fingerprint | undefined
      yield* Effect.addFinalizer(() =>
        Effect.promise(async () => {
          if (fingerprint === undefined) return
          const redact = record.redact ?? ((event: Event) => event)
          const transcript: Transcript = {
            header: {
              v86box: "transcript",
              format: FORMAT_VERSION,
              fingerprint,
              guestInit,
              recordedAt: new Date().toISOString()
            },
            events: recorder.events.map(redact)
          }
          await mkdir(dirname(file), { recursive: true })
          await writeFile(`${file}.tmp`, render(transcript))
          await rename(`${file}.tmp`, file)
        })
      )
      const service = yield* Box.make(record.options, {
        guestInit,
        onAssets: (assets, memoryMB) => {
          fingerprint = fingerprintOf(assets, memoryMB)
        },
        onKernelLog: (bytes) => recorder.log(bytes),
        wrapMachine: (machine) => recorder.wrap(machine)
      })
      // Runs before the machine shuts down: its last words are not part of the test.
      yield* Effect.addFinalizer(() => Effect.sync(() => recorder.stop()))
      return service
    })
  )

/**
 * How `layer` chooses between recording and replaying.
 *
 * @since 0.1.0
 * @category models
 */
export type Mode = "record" | "replay" | "auto"

/**
 * The mode from the environment: `V86BOX_TRANSCRIPTS=record` re-records, `replay` only
 * replays, anything else is `auto` (record only what is missing). When `CI` is set,
 * nothing is ever recorded.
 *
 * @since 0.1.0
 * @category constructors
 */
export const modeFromEnv = (env: Record<string, string | undefined> = process.env): Mode => {
  const mode = env.V86BOX_TRANSCRIPTS
  return mode === "record" || mode === "replay" ? mode : "auto"
}

/**
 * Replays `file`, or records it from a live VM, per `modeFromEnv`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  file: string,
  options: ReplayOptions & RecordOptions & { readonly mode?: Mode | undefined } = {}
): Layer.Layer<V86Box, LayerError> => {
  const mode = options.mode ?? modeFromEnv()
  const inCI = process.env.CI !== undefined && process.env.CI !== "" && process.env.CI !== "false"
  const exists = existsSync(file)
  const wantsRecording = mode === "record" || (mode === "auto" && !exists)
  if (wantsRecording && inCI) {
    return Layer.fail(
      new TranscriptMissing({
        source: file,
        reason: exists ? "CI never re-records transcripts" : "CI never records transcripts"
      })
    )
  }
  if (mode === "replay" && !exists) {
    return Layer.fail(new TranscriptMissing({ source: file, reason: "V86BOX_TRANSCRIPTS=replay and no file" }))
  }
  return wantsRecording ? layerRecord(file, options) : layerReplay(file, options)
}

/**
 * A redaction for `RecordOptions.redact`: replaces `secret` with `replacement` in the
 * guest's output, padding or cutting the replacement to the secret's length so the
 * protocol's frame lengths stay right.
 *
 * @since 0.1.0
 * @category redaction
 */
export const replaceText = (secret: string, replacement: string) => {
  const search = Buffer.from(secret, "utf8")
  const replace = Buffer.alloc(search.length, "*")
  Buffer.from(replacement, "utf8").copy(replace, 0, 0, search.length)
  return (event: Event): Event => {
    if (event.d !== "from" && event.d !== "log") return event
    const data = Buffer.from(event.data)
    let at = data.indexOf(search)
    if (at === -1) return event
    while (at !== -1) {
      replace.copy(data, at)
      at = data.indexOf(search, at + search.length)
    }
    return event.d === "from" ? { ...event, data: new Uint8Array(data), frames: ["(redacted)"] } : { ...event, data: new Uint8Array(data) }
  }
}
