/**
 * The state file: a saved machine that a new emulator resumes from. Warm start keeps one
 * per image; `box.snapshot()` makes one of a running sandbox.
 *
 * Format: a header line (magic), one JSON line saying what the state was made from, then
 * the raw v86 state. The JSON line lets a reader refuse a state that cannot fit: another
 * image, guest RAM size, v86 version (a state only fits its own emulator) or protocol.
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { mkdir, open, rename, rm, writeFile } from "node:fs/promises"
import { dirname } from "node:path"
import { PROTOCOL_VERSION } from "./protocol.ts"
import { v86Version } from "./v86Machine.ts"

const MAGIC = "v86box-state 1\n"

/** What a state was made from: a state resumes only where all of it is the same. */
export interface StateOrigin {
  readonly imageFingerprint: string
  readonly memoryMB: number
  readonly v86Version: string
  readonly protocolVersion: number
}

export interface SavedState {
  /** The agent version announced when the state was saved. */
  readonly agent: string
  /** Missing in files written before origins were recorded (warm start only needs `agent`). */
  readonly origin: StateOrigin | undefined
  /** The raw v86 state. */
  readonly state: Uint8Array
}

/** The origin of a state this process saves now. */
export const currentOrigin = (imageFingerprint: string, memoryMB: number): StateOrigin => ({
  imageFingerprint,
  memoryMB,
  v86Version,
  protocolVersion: PROTOCOL_VERSION
})

export const encode = (saved: SavedState): Uint8Array => {
  const meta = { agent: saved.agent, ...saved.origin }
  return Buffer.concat([Buffer.from(`${MAGIC}${JSON.stringify(meta)}\n`), saved.state])
}

/**
 * The two lines the SDK's state files start with (this one's and trainedState.ts's):
 * `magic`, then one line of JSON. The JSON, unchecked, and where the bytes after it
 * start; or what is wrong, worded for a `kind` of file.
 */
export const splitHeader = (
  bytes: Uint8Array,
  magic: string,
  kind: string
): Either.Either<{ readonly header: unknown; readonly bodyStart: number }, string> => {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  if (buffer.subarray(0, magic.length).toString("latin1") !== magic) return Either.left(`not a v86box ${kind}`)
  const end = buffer.indexOf(0x0a, magic.length)
  if (end === -1) return Either.left(`the ${kind}'s header is truncated`)
  try {
    return Either.right({ header: JSON.parse(buffer.subarray(magic.length, end).toString("utf8")), bodyStart: end + 1 })
  } catch {
    return Either.left(`the ${kind}'s header is not JSON`)
  }
}

/** Why reading a state file failed, as the errors that carry it say it. */
export const readFailure = (error: unknown): string =>
  (error as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : `cannot read it: ${String(error)}`

/** The state in `bytes`, or why they are not one. The state is a view, not a copy. */
export const decode = (bytes: Uint8Array): Either.Either<SavedState, string> => {
  const split = splitHeader(bytes, MAGIC, "state file")
  if (Either.isLeft(split)) return Either.left(split.left)
  const header = split.right.header
  const meta = (typeof header === "object" && header !== null ? header : {}) as Record<string, unknown>
  if (typeof meta.agent !== "string") return Either.left("the state file's header names no agent")
  const origin = typeof meta.imageFingerprint === "string" && typeof meta.memoryMB === "number" &&
      typeof meta.v86Version === "string" && typeof meta.protocolVersion === "number"
    ? {
      imageFingerprint: meta.imageFingerprint,
      memoryMB: meta.memoryMB,
      v86Version: meta.v86Version,
      protocolVersion: meta.protocolVersion
    }
    : undefined
  return Either.right({ agent: meta.agent, origin, state: bytes.subarray(split.right.bodyStart) })
}

/** Why a state of `origin` cannot resume in a machine of `expected`, if it cannot. */
export const mismatch = (origin: StateOrigin, expected: StateOrigin): string | undefined => {
  if (origin.v86Version !== expected.v86Version) {
    return `it was made by v86 ${origin.v86Version}, this is v86 ${expected.v86Version}`
  }
  if (origin.protocolVersion !== expected.protocolVersion) {
    return `its agent speaks protocol ${origin.protocolVersion}, this SDK speaks ${expected.protocolVersion}`
  }
  if (origin.imageFingerprint !== expected.imageFingerprint) return "it was made from another guest image"
  if (origin.memoryMB !== expected.memoryMB) {
    return `it has ${origin.memoryMB} MiB of guest RAM, ${expected.memoryMB} MiB were asked for`
  }
  return undefined
}

/** Enough of a file's start to hold its header lines. */
const HEADER_BYTES = 64 * 1024

/**
 * The state in the file at `path`, or why it is none (missing, unreadable, not a state).
 * The raw state is read into a buffer of its own: the emulator's worker can take it
 * without a copy.
 */
export const read = (path: string): Effect.Effect<SavedState, string> =>
  Effect.tryPromise({
    try: async (): Promise<Either.Either<SavedState, string>> => {
      const file = await open(path, "r")
      try {
        const { size } = await file.stat()
        const head = new Uint8Array(Math.min(size, HEADER_BYTES))
        await file.read(head, 0, head.length, 0)
        const header = decode(head)
        if (Either.isLeft(header)) return header
        const stateStart = head.length - header.right.state.length
        const state = new Uint8Array(size - stateStart)
        const { bytesRead } = await file.read(state, 0, state.length, stateStart)
        if (bytesRead !== state.length) return Either.left("the state file is truncated")
        return Either.right({ ...header.right, state })
      } finally {
        await file.close()
      }
    },
    catch: readFailure
  }).pipe(Effect.flatMap((result) => result))

/**
 * Writes atomically (a temporary file, then a rename): readers never see half a state.
 * `bytes` may come in parts, written one after another.
 */
export const write = (path: string, bytes: Uint8Array | ReadonlyArray<Uint8Array>): Effect.Effect<void, Error> =>
  Effect.tryPromise({
    try: async () => {
      await mkdir(dirname(path), { recursive: true })
      const temporary = `${path}.${process.pid}.${Date.now()}.partial`
      try {
        await writeFile(temporary, bytes)
        await rename(temporary, path)
      } finally {
        await rm(temporary, { force: true })
      }
    },
    catch: (error) => error as Error
  })
