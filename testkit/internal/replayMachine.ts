/**
 * A Machine that plays a transcript back: the guest's bytes come from the recording,
 * and what the code sends is checked, byte for byte, against what was recorded.
 */
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import { MachineError } from "../../src/Errors.ts"
import { ConsoleTail, fatalKernelMessage, type Machine } from "../../src/internal/machine.ts"
import { FrameType, HEADER_BYTES, MAGIC_0, MAGIC_1 } from "../../src/internal/protocol.ts"
import { TranscriptMismatch } from "../Errors.ts"
import type { Event, Transcript } from "../Transcript.ts"

export interface ReplayOptions {
  /** `"instant"` (default): the guest's bytes arrive as soon as they are due. `"recorded"`: after the recorded delays, through Effect's Clock. */
  readonly timing?: "instant" | "recorded" | undefined
}

export interface ReplayMachine extends Machine {
  /** Events the code did not consume: the guest's output nobody read, or sends that never came. */
  readonly unconsumed: Effect.Effect<ReadonlyArray<{ readonly index: number; readonly event: Event }>>
}

export const make = (transcript: Transcript, source: string, options: ReplayOptions = {}): Effect.Effect<ReplayMachine> =>
  Effect.sync(() => {
    const events = transcript.events
    const consumed = new Array<boolean>(events.length).fill(false)
    const kernelLog = new ConsoleTail()
    const latin1 = new TextDecoder("latin1")
    /** Every event before this index is consumed. */
    let cursor = 0
    let progress = Deferred.unsafeMake<void>(FiberId.none)
    let mismatch: TranscriptMismatch | undefined

    const advance = () => {
      while (cursor < events.length) {
        const event = events[cursor]!
        if (event.d === "log") kernelLog.append(latin1.decode(event.data))
        else if (event.d === "mark") {
          // A label for humans only.
        } else if (!consumed[cursor]) break
        cursor++
      }
    }

    const wakeWaiters = () => {
      const woken = progress
      progress = Deferred.unsafeMake<void>(FiberId.none)
      Deferred.unsafeDone(woken, Effect.void)
    }

    const receive: Effect.Effect<Uint8Array, MachineError> = Effect.suspend(() => {
      if (mismatch !== undefined) return Effect.die(mismatch)
      advance()
      const fatal = fatalKernelMessage(kernelLog.tail())
      if (fatal !== undefined) {
        // The recording noted the same death as a `fail` event: it is this one.
        const recordedFailure = events.findIndex((event, index) => index >= cursor && event.d === "fail" && !consumed[index])
        if (recordedFailure !== -1) consumed[recordedFailure] = true
        return Effect.fail(new MachineError({ reason: fatal, consoleTail: kernelLog.tail(4096) }))
      }
      const event = events[cursor]
      // At the end of the recording the guest is silent, as a live one would be.
      if (event === undefined) return Effect.never
      if (event.d === "fail") {
        consumed[cursor] = true
        return Effect.fail(new MachineError({ reason: event.reason, consoleTail: kernelLog.tail(4096) }))
      }
      if (event.d !== "from") return Effect.zipRight(Deferred.await(progress), receive)
      consumed[cursor] = true
      const deliver = Effect.succeed(event.data)
      return options.timing === "recorded" ? Effect.zipRight(Effect.sleep(Duration.millis(event.t)), deliver) : deliver
    })

    const send = (bytes: Uint8Array): Effect.Effect<void, MachineError> =>
      Effect.suspend(() => {
        if (mismatch !== undefined) return Effect.die(mismatch)
        advance()
        const index = matchingSend(bytes)
        if (index === undefined || !sameBytes((events[index] as { readonly data: Uint8Array }).data, bytes)) {
          const expected = index === undefined ? undefined : events[index]
          mismatch = new TranscriptMismatch({
            source,
            eventIndex: index ?? events.length,
            expected: expected?.d === "to" ? escapeBytes(expected.data) : "(no more sends recorded for this channel)",
            actual: escapeBytes(bytes)
          })
          wakeWaiters()
          return Effect.die(mismatch)
        }
        consumed[index] = true
        advance()
        wakeWaiters()
        return Effect.void
      })

    /**
     * The recorded send this one must equal. Sends keep their order per channel, but
     * channels interleave as their fibers happen to run, and CREDIT frames (all alike)
     * may pass a channel's other frames: consumers and timers race in a live recording.
     */
    const matchingSend = (bytes: Uint8Array): number | undefined => {
      const header = frameHeader(bytes)
      let firstOfChannel: number | undefined
      for (let index = cursor; index < events.length; index++) {
        const event = events[index]!
        if (event.d === "fail") break
        if (event.d !== "to" || consumed[index]) continue
        const recorded = frameHeader(event.data)
        if (header === undefined || recorded === undefined) return index
        if (recorded.channel !== header.channel) continue
        const isCredit = recorded.type === FrameType.CREDIT
        if (header.type === FrameType.CREDIT) {
          if (isCredit && sameBytes(event.data, bytes)) return index
          firstOfChannel ??= index
          continue
        }
        if (!isCredit) return index
        firstOfChannel ??= index
      }
      return firstOfChannel
    }

    return {
      receive,
      send,
      kernelLogTail: Effect.sync(() => {
        advance()
        return kernelLog.tail()
      }),
      saveState: Effect.fail(
        new MachineError({ reason: "a replayed machine has no state to save: record this test live", consoleTail: "" })
      ),
      unconsumed: Effect.sync(() =>
        events.flatMap((event, index) =>
          consumed[index] || event.d === "log" || event.d === "mark" ? [] : [{ index, event }]
        )
      )
    }
  })

const frameHeader = (bytes: Uint8Array): { readonly type: number; readonly channel: number } | undefined =>
  bytes.length >= HEADER_BYTES && bytes[0] === MAGIC_0 && bytes[1] === MAGIC_1
    ? { type: bytes[2]!, channel: new DataView(bytes.buffer, bytes.byteOffset + 4, 4).getUint32(0, true) }
    : undefined

const sameBytes = (left: Uint8Array, right: Uint8Array) =>
  left.length === right.length && left.every((byte, index) => byte === right[index])

/** Bytes as readable text: printable ASCII as is, everything else as \xNN. */
export const escapeBytes = (bytes: Uint8Array, max = 400): string => {
  let text = ""
  for (const byte of bytes.subarray(0, max)) {
    text += byte >= 0x20 && byte < 0x7f && byte !== 0x5c ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, "0")}`
  }
  return bytes.length > max ? `${text}… (${bytes.length} bytes)` : text
}
