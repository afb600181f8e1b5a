/**
 * Console transcripts: what a live machine's agent console carried, in order, with
 * timings, as NDJSON. The format is documented in docs/transcripts.md.
 *
 * @since 0.1.0
 * @module
 */
import * as Effect from "effect/Effect"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { decodeExit, decodePairs, FrameDecoder, frameTypeName, FrameType } from "../src/internal/protocol.ts"

/**
 * The transcript format version this code reads and writes.
 *
 * @since 0.1.0
 * @category constants
 */
export const FORMAT_VERSION = 1

/**
 * What produced a transcript. A replay whose fingerprint differs from the current one is
 * stale: the image, the agent protocol, v86 or the boot options changed.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Fingerprint = Schema.Struct({
  /** `ResolvedAssets.fingerprint`: sha256 over the image's files and command line. */
  image: Schema.String,
  protocol: Schema.Number,
  v86: Schema.String,
  memoryMB: Schema.Number
})

/**
 * @since 0.1.0
 * @category models
 */
export interface Fingerprint extends Schema.Schema.Type<typeof Fingerprint> {}

/**
 * The first line of a transcript.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Header = Schema.Struct({
  v86box: Schema.Literal("transcript"),
  format: Schema.Literal(FORMAT_VERSION),
  fingerprint: Fingerprint,
  /** The time, entropy and hostname the host gave the guest at boot; replay gives the same. */
  guestInit: Schema.Struct({
    timeMillis: Schema.Number,
    entropyHex: Schema.String,
    hostname: Schema.optionalWith(Schema.String, { exact: true })
  }),
  /** ISO date of the recording, for humans. */
  recordedAt: Schema.String
})

/**
 * @since 0.1.0
 * @category models
 */
export interface Header extends Schema.Schema.Type<typeof Header> {}

/**
 * Bytes as a JSON string in which each character is one byte (U+0000–U+00FF): lossless,
 * and ASCII text stays readable in the file and in diffs.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Bytes: Schema.Schema<Uint8Array, string> = Schema.transformOrFail(
  Schema.String,
  Schema.Uint8ArrayFromSelf,
  {
    strict: true,
    decode: (text, _, ast) => {
      for (let index = 0; index < text.length; index++) {
        if (text.charCodeAt(index) > 0xff) {
          return ParseResult.fail(new ParseResult.Type(ast, text, `character ${index} is not a byte (above U+00FF)`))
        }
      }
      return ParseResult.succeed(Uint8Array.from(Buffer.from(text, "latin1")))
    },
    encode: (bytes) => ParseResult.succeed(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("latin1"))
  }
)

const Millis = Schema.Number.pipe(Schema.nonNegative())

/**
 * One event: `t` is the milliseconds since the previous event. `to` and `from` are the
 * agent console's two directions, `log` the kernel log (ttyS0), `mark` a label for
 * humans (boot done), `fail` the machine failing (its MachineError reason). `frames` glosses the protocol frames in
 * the bytes; it is written for reviewers and ignored on replay.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Event = Schema.Union(
  Schema.Struct({
    t: Millis,
    d: Schema.Literal("to", "from"),
    data: Bytes,
    frames: Schema.optional(Schema.Array(Schema.String))
  }),
  Schema.Struct({ t: Millis, d: Schema.Literal("log"), data: Bytes }),
  Schema.Struct({ t: Millis, d: Schema.Literal("mark"), label: Schema.String }),
  Schema.Struct({ t: Millis, d: Schema.Literal("fail"), reason: Schema.String })
)

/**
 * @since 0.1.0
 * @category models
 */
export type Event = Schema.Schema.Type<typeof Event>

/**
 * A whole transcript.
 *
 * @since 0.1.0
 * @category models
 */
export interface Transcript {
  readonly header: Header
  readonly events: ReadonlyArray<Event>
}

/**
 * A transcript file that does not parse: names the line and what is wrong with it.
 *
 * @since 0.1.0
 * @category errors
 */
export class TranscriptError extends Schema.TaggedError<TranscriptError>()("TranscriptError", {
  source: Schema.String,
  line: Schema.Number,
  reason: Schema.String
}) {
  override get message(): string {
    return `transcript ${this.source}, line ${this.line}: ${this.reason}`
  }
}

const decodeHeader = Schema.decodeUnknownEither(Schema.parseJson(Header))
const decodeEvent = Schema.decodeUnknownEither(Schema.parseJson(Event))
const encodeHeader = Schema.encodeSync(Schema.parseJson(Header))
const encodeEvent = Schema.encodeSync(Schema.parseJson(Event))

/**
 * Parses NDJSON text into a transcript.
 *
 * @since 0.1.0
 * @category parsing
 */
export const parse = (text: string, source = "(text)"): Effect.Effect<Transcript, TranscriptError> =>
  Effect.suspend(() => {
    const lines = text.split("\n")
    if (lines.at(-1) === "") lines.pop()
    const failAt = (line: number, error: ParseResult.ParseError) =>
      Effect.fail(new TranscriptError({ source, line, reason: ParseResult.TreeFormatter.formatErrorSync(error) }))
    if (lines.length === 0) return Effect.fail(new TranscriptError({ source, line: 1, reason: "the file is empty" }))
    const header = decodeHeader(lines[0])
    if (header._tag === "Left") return failAt(1, header.left)
    const events: Array<Event> = []
    for (let index = 1; index < lines.length; index++) {
      const event = decodeEvent(lines[index])
      if (event._tag === "Left") return failAt(index + 1, event.left)
      events.push(event.right)
    }
    return Effect.succeed({ header: header.right, events })
  })

/**
 * Renders a transcript as NDJSON text: the header line, then one line per event.
 *
 * @since 0.1.0
 * @category rendering
 */
export const render = (transcript: Transcript): string =>
  [encodeHeader(transcript.header), ...transcript.events.map((event) => encodeEvent(event))].join("\n") + "\n"

/**
 * A reviewer's reading of the frames in one direction of the console: one string per
 * frame, e.g. `EXEC#3 cmd="echo hi"` or `STDOUT#3 "hi\n"`.
 *
 * @internal
 */
export const glossFrames = (decoder: FrameDecoder, bytes: Uint8Array): Array<string> => {
  try {
    return decoder.push(bytes).map((frame) => {
      const name = `${frameTypeName(frame.type)}#${frame.channel}`
      switch (frame.type) {
        case FrameType.EXEC:
        case FrameType.READY:
        case FrameType.INIT:
          return `${name} ${decodePairs(frame.payload).map(([key, value]) => `${key}=${JSON.stringify(value)}`).join(" ")}`
        case FrameType.EXIT: {
          const { code, signal } = decodeExit(frame.payload)
          return `${name} code=${code} signal=${signal}`
        }
        case FrameType.STDOUT:
        case FrameType.STDERR:
        case FrameType.STDIN:
        case FrameType.ERROR:
          return `${name} ${JSON.stringify(preview(frame.payload))}`
        default:
          return `${name} ${frame.payload.length} bytes`
      }
    })
  } catch {
    return ["(not a frame)"]
  }
}

const preview = (bytes: Uint8Array): string => {
  const text = new TextDecoder().decode(bytes.subarray(0, 200))
  return bytes.length > 200 ? `${text}… (${bytes.length} bytes)` : text
}
