/**
 * The agent wire protocol (docs/protocol.md): frames, their types, and the small
 * payload encodings. Pure functions, no Effect: both the live client and the tests use
 * them, and the native agent tests drive the C agent with exactly these bytes.
 */

import { concatBytes } from "./bytes.mjs"

/** Version of docs/protocol.md this code speaks; the agent announces its own in READY. */
export const PROTOCOL_VERSION = 1

export const MAGIC_0 = 0x56
export const MAGIC_1 = 0xbb
export const HEADER_BYTES = 12
/**
 * Where a header's fields are (docs/protocol.md): the magic's two bytes, then the type
 * and flags bytes, the channel and the payload's length (u32 little-endian). The codec
 * below and the worker's frame follower (outputPacing.mjs) both read it from here.
 */
export const FRAME_LAYOUT = {
  magic: [MAGIC_0, MAGIC_1],
  headerBytes: HEADER_BYTES,
  typeOffset: 2,
  flagsOffset: 3,
  channelOffset: 4,
  lengthOffset: 8
} as const
const { typeOffset, flagsOffset, channelOffset, lengthOffset } = FRAME_LAYOUT
export const MAX_PAYLOAD_BYTES = 65536

/** Output credit a channel starts with (guest → host, stdout and stderr together). */
export const INITIAL_OUTPUT_CREDIT = 262144
/** Stdin bytes the host may have in flight per channel before a STDIN_ACK. */
export const STDIN_WINDOW = 65536

export const FrameType = {
  PING: 0x02,
  INIT: 0x04,
  EXEC: 0x10,
  STDIN: 0x11,
  SIGNAL: 0x12,
  CREDIT: 0x13,
  READY: 0x80,
  PONG: 0x82,
  INIT_OK: 0x84,
  STARTED: 0x90,
  STDOUT: 0x91,
  STDERR: 0x92,
  EXIT: 0x93,
  STDIN_ACK: 0x94,
  ERROR: 0x95
} as const

export type FrameTypeName = keyof typeof FrameType

/**
 * Guest → host frames the host waits for: a command's end and the answers to its
 * requests. The emulator worker posts output that completes one of these at once and
 * holds the rest (STARTED, streamed output) a moment (src/internal/outputPacing.mjs).
 */
export const AWAITED_FRAME_TYPES: ReadonlyArray<number> = [
  FrameType.READY,
  FrameType.PONG,
  FrameType.INIT_OK,
  FrameType.EXIT,
  FrameType.STDIN_ACK,
  FrameType.ERROR
]

const knownTypes = new Set<number>(Object.values(FrameType))

const typeNames = new Map<number, FrameTypeName>(
  (Object.entries(FrameType) as Array<[FrameTypeName, number]>).map(([name, code]) => [code, name])
)

/** The name of a frame type, for error messages and transcripts. */
export const frameTypeName = (type: number): string =>
  typeNames.get(type) ?? `0x${type.toString(16).padStart(2, "0")}`

export interface Frame {
  readonly type: number
  readonly channel: number
  readonly payload: Uint8Array
}

/** Thrown by the decoder on bytes that are not a valid frame. */
export class ProtocolError extends Error {
  readonly _tag = "ProtocolError"
}

export const encodeFrame = (frame: Frame): Uint8Array => {
  if (frame.payload.length > MAX_PAYLOAD_BYTES) {
    throw new ProtocolError(`payload of ${frame.payload.length} bytes exceeds ${MAX_PAYLOAD_BYTES}`)
  }
  const bytes = new Uint8Array(HEADER_BYTES + frame.payload.length)
  const view = new DataView(bytes.buffer)
  bytes[0] = MAGIC_0
  bytes[1] = MAGIC_1
  bytes[typeOffset] = frame.type
  bytes[flagsOffset] = 0
  view.setUint32(channelOffset, frame.channel, true)
  view.setUint32(lengthOffset, frame.payload.length, true)
  bytes.set(frame.payload, HEADER_BYTES)
  return bytes
}

/**
 * Incremental decoder: feed it bytes as they arrive, in any split, and it returns the
 * complete frames. With `skipNoise` it discards bytes until it sees a frame's magic
 * (used before the agent's READY frame, when the console may carry boot noise).
 */
export class FrameDecoder {
  private buffer: Uint8Array = new Uint8Array(0)
  skipNoise: boolean

  constructor(options?: { readonly skipNoise?: boolean | undefined }) {
    this.skipNoise = options?.skipNoise ?? false
  }

  /** Bytes received but not yet part of a complete frame. */
  get pendingBytes(): number {
    return this.buffer.length
  }

  push(bytes: Uint8Array): Array<Frame> {
    this.buffer = this.buffer.length === 0 ? bytes : concatBytes([this.buffer, bytes])
    const frames: Array<Frame> = []
    let offset = 0
    while (offset < this.buffer.length) {
      const available = this.buffer.length - offset
      const problem = this.headerProblem(offset, Math.min(available, HEADER_BYTES))
      if (problem !== undefined) {
        if (this.skipNoise) {
          offset++
          continue
        }
        this.fail(offset, problem)
      }
      if (available < HEADER_BYTES) break
      const view = new DataView(this.buffer.buffer, this.buffer.byteOffset + offset, HEADER_BYTES)
      const length = view.getUint32(lengthOffset, true)
      if (available < HEADER_BYTES + length) break
      const start = offset + HEADER_BYTES
      frames.push({
        type: this.buffer[offset + typeOffset]!,
        channel: view.getUint32(channelOffset, true),
        payload: this.buffer.slice(start, start + length)
      })
      offset = start + length
    }
    this.buffer = offset === 0 ? this.buffer : this.buffer.slice(offset)
    return frames
  }

  /** Why the (possibly partial) header at `offset` cannot start a frame, if it cannot. */
  private headerProblem(offset: number, available: number): string | undefined {
    const at = (index: number) => this.buffer[offset + index]!
    if (at(0) !== MAGIC_0) return `bad magic byte 0x${hex(at(0))}`
    if (available > 1 && at(1) !== MAGIC_1) return `bad magic byte 0x${hex(at(1))}`
    if (available > typeOffset && !knownTypes.has(at(typeOffset))) return `unknown frame type 0x${hex(at(typeOffset))}`
    if (available > flagsOffset && at(flagsOffset) !== 0) return `non-zero flags 0x${hex(at(flagsOffset))}`
    if (available === HEADER_BYTES) {
      const length = new DataView(this.buffer.buffer, this.buffer.byteOffset + offset + lengthOffset, 4).getUint32(0, true)
      if (length > MAX_PAYLOAD_BYTES) return `payload length ${length} exceeds ${MAX_PAYLOAD_BYTES}`
    }
    return undefined
  }

  private fail(offset: number, reason: string): never {
    const context = this.buffer.slice(offset, offset + 16)
    this.buffer = new Uint8Array(0)
    throw new ProtocolError(`${reason} (bytes: ${Array.from(context, hex).join(" ")})`)
  }
}

const hex = (byte: number): string => byte.toString(16).padStart(2, "0")

const textEncoder = new TextEncoder()
const textDecoder = new TextDecoder()

/** `key\0value\0…`; keys and values must not contain NUL. */
export const encodePairs = (pairs: ReadonlyArray<readonly [string, string]>): Uint8Array => {
  const parts: Array<string> = []
  for (const [key, value] of pairs) {
    if (key.includes("\0") || value.includes("\0")) {
      throw new ProtocolError(`a NUL byte cannot be sent in "${key}"`)
    }
    parts.push(key, "\0", value, "\0")
  }
  return textEncoder.encode(parts.join(""))
}

export const decodePairs = (payload: Uint8Array): Array<[string, string]> => {
  const fields = textDecoder.decode(payload).split("\0")
  if (fields.pop() !== "" || fields.length % 2 !== 0) {
    throw new ProtocolError("pairs payload is not a sequence of NUL-terminated key/value strings")
  }
  const pairs: Array<[string, string]> = []
  for (let index = 0; index < fields.length; index += 2) pairs.push([fields[index]!, fields[index + 1]!])
  return pairs
}

export const encodeU32 = (value: number): Uint8Array => {
  const bytes = new Uint8Array(4)
  new DataView(bytes.buffer).setUint32(0, value, true)
  return bytes
}

export const decodeU32 = (payload: Uint8Array): number => {
  if (payload.length !== 4) throw new ProtocolError(`expected a 4-byte payload, got ${payload.length}`)
  return new DataView(payload.buffer, payload.byteOffset, 4).getUint32(0, true)
}

export const decodeExit = (payload: Uint8Array): { code: number; signal: number } => {
  if (payload.length !== 8) throw new ProtocolError(`EXIT payload must be 8 bytes, got ${payload.length}`)
  const view = new DataView(payload.buffer, payload.byteOffset, 8)
  return { code: view.getInt32(0, true), signal: view.getUint32(4, true) }
}

export const encodeExit = (code: number, signal: number): Uint8Array => {
  const bytes = new Uint8Array(8)
  const view = new DataView(bytes.buffer)
  view.setInt32(0, code, true)
  view.setUint32(4, signal, true)
  return bytes
}
