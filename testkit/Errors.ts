/**
 * The testkit's errors.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * The code sent bytes the transcript did not record (or sent when the recording has no
 * more sends). Names the event and shows both sides, escaped.
 *
 * @since 0.1.0
 * @category errors
 */
export class TranscriptMismatch extends Schema.TaggedError<TranscriptMismatch>()("TranscriptMismatch", {
  source: Schema.String,
  eventIndex: Schema.Number,
  expected: Schema.String,
  actual: Schema.String
}) {
  override get message(): string {
    return `transcript ${this.source}: the code sent something else than event ${this.eventIndex} recorded\n` +
      `  expected: ${this.expected}\n  actual:   ${this.actual}\n` +
      `If the change is intended, re-record with: ${recordCommand}`
  }
}

/**
 * The transcript was recorded by another image, agent protocol, v86 version or with other
 * boot options.
 *
 * @since 0.1.0
 * @category errors
 */
export class StaleTranscript extends Schema.TaggedError<StaleTranscript>()("StaleTranscript", {
  source: Schema.String,
  differences: Schema.Array(Schema.String)
}) {
  override get message(): string {
    return `transcript ${this.source} is stale: ${this.differences.join("; ")}\nRe-record it with: ${recordCommand}`
  }
}

/**
 * No transcript where one was expected, and recording is not allowed here (CI, or
 * `V86BOX_TRANSCRIPTS=replay`).
 *
 * @since 0.1.0
 * @category errors
 */
export class TranscriptMissing extends Schema.TaggedError<TranscriptMissing>()("TranscriptMissing", {
  source: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `transcript ${this.source} is missing (${this.reason}). Record it with: ${recordCommand}`
  }
}

/**
 * The scope closed with recorded events the code never consumed: the test did less than
 * the recording.
 *
 * @since 0.1.0
 * @category errors
 */
export class UnconsumedEvents extends Schema.TaggedError<UnconsumedEvents>()("UnconsumedEvents", {
  source: Schema.String,
  eventIndexes: Schema.Array(Schema.Number)
}) {
  override get message(): string {
    const shown = this.eventIndexes.slice(0, 10).join(", ")
    return `transcript ${this.source}: ${this.eventIndexes.length} recorded events were never consumed (events ${shown}${
      this.eventIndexes.length > 10 ? ", …" : ""
    }). Re-record with: ${recordCommand}, or replay with { unconsumed: "ignore" }`
  }
}

/** The one command that re-records the suite's transcripts. */
export const recordCommand = "npm run transcripts:record"
