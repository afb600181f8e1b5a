/**
 * The frame codec: what the agent client decodes is exactly what was encoded, whatever
 * byte boundaries the console splits it at; garbage is a ProtocolError, never a crash.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import {
  decodePairs,
  encodeFrame,
  encodePairs,
  type Frame,
  FrameDecoder,
  FrameType,
  MAX_PAYLOAD_BYTES,
  ProtocolError
} from "../src/internal/protocol.ts"

const frameArbitrary: fc.Arbitrary<Frame> = fc.record({
  type: fc.constantFrom(...Object.values(FrameType)),
  channel: fc.nat({ max: 0xffffffff }),
  payload: fc.uint8Array({ maxLength: 2048 })
})

/** Cuts `bytes` at the given points (sorted, deduplicated). */
const split = (bytes: Uint8Array, cuts: ReadonlyArray<number>): Array<Uint8Array> => {
  const points = [...new Set(cuts.map((cut) => cut % (bytes.length + 1)))].sort((a, b) => a - b)
  const pieces: Array<Uint8Array> = []
  let start = 0
  for (const point of points) {
    pieces.push(bytes.subarray(start, point))
    start = point
  }
  pieces.push(bytes.subarray(start))
  return pieces
}

const concat = (parts: ReadonlyArray<Uint8Array>) => new Uint8Array(Buffer.concat(parts))

describe("frames", () => {
  it.prop("decode identically whatever byte boundaries split them", [fc.array(frameArbitrary, { maxLength: 20 }), fc.array(fc.nat(), { maxLength: 40 })], ([frames, cuts]) => {
    const wire = concat(frames.map(encodeFrame))
    const decoder = new FrameDecoder()
    const decoded = split(wire, cuts).flatMap((piece) => decoder.push(piece))
    expect(decoded).toEqual(frames.map((frame) => ({ ...frame, payload: new Uint8Array(frame.payload) })))
    expect(decoder.pendingBytes).toBe(0)
  })

  it.prop("random bytes either decode or raise ProtocolError, nothing else", [fc.uint8Array({ maxLength: 4096 })], ([bytes]) => {
    const decoder = new FrameDecoder()
    try {
      decoder.push(bytes)
    } catch (error) {
      expect(error).toBeInstanceOf(ProtocolError)
    }
  })

  it.prop("a mutated valid stream decodes or raises ProtocolError", [fc.array(frameArbitrary, { minLength: 1, maxLength: 5 }), fc.nat(), fc.integer({ min: 0, max: 255 })], ([frames, position, value]) => {
    const wire = concat(frames.map(encodeFrame))
    wire[position % wire.length] = value
    try {
      new FrameDecoder().push(wire)
    } catch (error) {
      expect(error).toBeInstanceOf(ProtocolError)
    }
  })

  it.prop("a valid stream with bytes inserted, deleted or cut off decodes or raises ProtocolError, skipping noise or not", [
    fc.array(frameArbitrary, { minLength: 1, maxLength: 5 }),
    fc.array(fc.record({ at: fc.nat(), deleteCount: fc.nat({ max: 16 }), insert: fc.uint8Array({ maxLength: 16 }) }), { minLength: 1, maxLength: 4 }),
    fc.boolean()
  ], ([frames, edits, skipNoise]) => {
    const bytes = Array.from(concat(frames.map(encodeFrame)))
    for (const edit of edits) bytes.splice(edit.at % (bytes.length + 1), edit.deleteCount, ...edit.insert)
    const decoder = new FrameDecoder({ skipNoise })
    try {
      for (const frame of decoder.push(Uint8Array.from(bytes))) expect(frame.payload.length).toBeLessThanOrEqual(MAX_PAYLOAD_BYTES)
    } catch (error) {
      expect(error).toBeInstanceOf(ProtocolError)
    }
  })

  it("noise before the first frame is skipped only when asked", () => {
    const frame = encodeFrame({ type: FrameType.READY, channel: 0, payload: encodePairs([["protocol", "1"]]) })
    const noisy = concat([new TextEncoder().encode("boot noise \x56 more"), frame])
    expect(new FrameDecoder({ skipNoise: true }).push(noisy)).toHaveLength(1)
    expect(() => new FrameDecoder().push(noisy)).toThrow(ProtocolError)
  })

  it("rejects a payload length above the maximum, naming it", () => {
    const frame = encodeFrame({ type: FrameType.STDOUT, channel: 1, payload: new Uint8Array(0) })
    new DataView(frame.buffer).setUint32(8, MAX_PAYLOAD_BYTES + 1, true)
    expect(() => new FrameDecoder().push(frame)).toThrow(/payload length 65537/)
  })
})

describe("pairs", () => {
  const text = fc.string({ unit: "grapheme" }).filter((value) => !value.includes("\0"))
  it.prop("round trip", [fc.array(fc.tuple(text, text), { maxLength: 10 })], ([pairs]) => {
    expect(decodePairs(encodePairs(pairs))).toEqual(pairs)
  })

  it("refuse a NUL byte", () => {
    expect(() => encodePairs([["cmd", "a\0b"]])).toThrow(ProtocolError)
  })
})
