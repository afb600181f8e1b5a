/**
 * When an emulator worker posts the guest's output (src/internal/outputPacing.mjs): a
 * chunk that completes a frame the host waits for goes at once, with everything held
 * before it, in order; other output waits a moment or until enough has piled up, and
 * nothing is lost or reordered whatever the chunking.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { frameEnds, HOLD_BYTES, HOLD_MILLIS, outbox } from "../src/internal/outputPacing.mjs"
import {
  AWAITED_FRAME_TYPES,
  encodeExit,
  encodeFrame,
  encodeU32,
  FRAME_LAYOUT,
  FrameType,
  MAGIC_0
} from "../src/internal/protocol.ts"

const layout = { ...FRAME_LAYOUT, urgentTypes: AWAITED_FRAME_TYPES }
const started = (channel: number) => encodeFrame({ type: FrameType.STARTED, channel, payload: encodeU32(100 + channel) })
const stdout = (channel: number, text: string) =>
  encodeFrame({ type: FrameType.STDOUT, channel, payload: new TextEncoder().encode(text) })
const exit = (channel: number) => encodeFrame({ type: FrameType.EXIT, channel, payload: encodeExit(0, 0) })

const concat = (parts: ReadonlyArray<Uint8Array>) => {
  const bytes = new Uint8Array(parts.reduce((n, part) => n + part.length, 0))
  let offset = 0
  for (const part of parts) {
    bytes.set(part, offset)
    offset += part.length
  }
  return bytes
}

const recorder = () => {
  const posts: Array<{ kind: string; bytes: Uint8Array }> = []
  const agentFrameEnds = frameEnds(layout)
  const box = outbox({
    post: (kind: string, bytes: Uint8Array) => posts.push({ kind, bytes }),
    isUrgent: (kind: string, chunk: Uint8Array) => kind === "agent" && agentFrameEnds(chunk)
  })
  return { posts, box }
}

const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis))

describe("which output completes a frame the host waits for", () => {
  it("finds exactly the chunks where an awaited frame ends, however the frames are cut, after any noise", () => {
    const frame = fc.record({
      type: fc.constantFrom(...Object.values(FrameType)),
      channel: fc.nat(),
      payload: fc.uint8Array({ maxLength: 300 })
    })
    // Noise before the first frame (a guest's stray output) never holds the magic.
    const noise = fc.uint8Array({ maxLength: 40 }).map((bytes) => bytes.filter((byte) => byte !== MAGIC_0))
    fc.assert(
      fc.property(noise, fc.array(frame, { minLength: 1, maxLength: 12 }), fc.array(fc.nat(), { maxLength: 20 }), (prefix, frames, cutSeeds) => {
        const encoded = frames.map(encodeFrame)
        const stream = concat([prefix, ...encoded])
        // Where each awaited frame's last byte sits in the stream.
        const ends: Array<number> = []
        let offset = prefix.length
        for (const [i, bytes] of encoded.entries()) {
          offset += bytes.length
          if (AWAITED_FRAME_TYPES.includes(frames[i]!.type)) ends.push(offset - 1)
        }
        const cuts = [...new Set(cutSeeds.map((seed) => seed % (stream.length + 1)))].sort((a, b) => a - b)
        const bounds = [0, ...cuts, stream.length]
        const scan = frameEnds(layout)
        for (let i = 0; i + 1 < bounds.length; i++) {
          const [from, to] = [bounds[i]!, bounds[i + 1]!]
          const expected = ends.some((end) => end >= from && end < to)
          expect(scan(stream.subarray(from, to))).toBe(expected)
        }
      })
    )
  })
})

describe("posting the guest's output", () => {
  it("holds a command's STARTED and posts it with its EXIT, in one message", async () => {
    const { posts, box } = recorder()
    box.add("agent", started(1))
    expect(posts).toHaveLength(0)
    box.add("agent", exit(1))
    expect(posts).toEqual([{ kind: "agent", bytes: concat([started(1), exit(1)]) }])
    await sleep(HOLD_MILLIS * 3)
    expect(posts).toHaveLength(1)
  })

  it("posts output nobody waits for after a moment, and the kernel log too", async () => {
    const { posts, box } = recorder()
    box.add("agent", started(2))
    box.add("agent", stdout(2, "partial line"))
    for (const byte of new TextEncoder().encode("log\n")) box.add("serial", Uint8Array.of(byte))
    expect(posts).toHaveLength(0)
    await sleep(HOLD_MILLIS * 5)
    expect(posts).toEqual([
      { kind: "agent", bytes: concat([started(2), stdout(2, "partial line")]) },
      { kind: "serial", bytes: new TextEncoder().encode("log\n") }
    ])
  })

  it("posts at once once enough output is held, so bulk output streams on", () => {
    const { posts, box } = recorder()
    const chunk = stdout(3, "x".repeat(4096))
    let added = 0
    while (posts.length === 0) {
      box.add("agent", chunk)
      added += chunk.length
    }
    expect(added).toBeGreaterThanOrEqual(HOLD_BYTES)
    expect(added).toBeLessThan(HOLD_BYTES + chunk.length)
    expect(posts[0]!.bytes.length).toBe(added)
  })

  it("drops what it holds when its guest is gone, and posts nothing later", async () => {
    const { posts, box } = recorder()
    box.add("agent", started(4))
    box.clear()
    await sleep(HOLD_MILLIS * 5)
    box.add("agent", exit(5))
    expect(posts).toEqual([{ kind: "agent", bytes: exit(5) }])
  })
})
