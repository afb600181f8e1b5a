/**
 * Warm start: the first cold boot of an image saves the booted machine's state, and
 * later sandboxes resume from it instead of booting (hundreds of ms instead of seconds).
 *
 * A state file holds one header line (magic), one JSON line (what it was made from),
 * then the raw v86 state. It is keyed by everything that makes a state unusable when it
 * changes: the image fingerprint, guest RAM, the v86 version (a state only fits its own
 * emulator) and the protocol version.
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { createHash } from "node:crypto"
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises"
import { homedir } from "node:os"
import { dirname, join } from "node:path"
import { PROTOCOL_VERSION } from "./protocol.ts"
import { v86Version } from "./v86Machine.ts"


const MAGIC = "v86box-state 1\n"

export interface StateKey {
  readonly imageFingerprint: string
  readonly memoryMB: number
}

export interface SavedState {
  /** The agent version announced when the state was saved. */
  readonly agent: string
  readonly state: Uint8Array
}

export const defaultStatePath = (key: StateKey, assetsDir: string | undefined): string => {
  const id = createHash("sha256")
    .update(`${key.imageFingerprint}\n${key.memoryMB}\n${v86Version}\n${PROTOCOL_VERSION}`)
    .digest("hex")
    .slice(0, 32)
  return join(assetsDir ?? join(homedir(), ".v86box"), "states", `${id}.v86state`)
}

/** The saved state, if the file exists and is one of ours; anything unreadable counts as none. */
export const read = (path: string): Effect.Effect<Option.Option<SavedState>> =>
  Effect.promise(async () => {
    try {
      const bytes = await readFile(path)
      if (bytes.subarray(0, MAGIC.length).toString("latin1") !== MAGIC) return Option.none()
      const endOfMeta = bytes.indexOf(0x0a, MAGIC.length)
      if (endOfMeta === -1) return Option.none()
      const meta = JSON.parse(bytes.subarray(MAGIC.length, endOfMeta).toString("utf8")) as { agent?: unknown }
      if (typeof meta.agent !== "string") return Option.none()
      return Option.some({ agent: meta.agent, state: new Uint8Array(bytes.buffer, bytes.byteOffset + endOfMeta + 1) })
    } catch {
      return Option.none()
    }
  })

/** Writes atomically (a temporary file, then a rename): readers never see half a state. */
export const write = (path: string, saved: SavedState): Effect.Effect<void, Error> =>
  Effect.tryPromise({
    try: async () => {
      await mkdir(dirname(path), { recursive: true })
      const temporary = `${path}.${process.pid}.${Date.now()}.partial`
      try {
        await writeFile(temporary, Buffer.concat([Buffer.from(`${MAGIC}${JSON.stringify({ agent: saved.agent })}\n`), saved.state]))
        await rename(temporary, path)
      } finally {
        await rm(temporary, { force: true })
      }
    },
    catch: (error) => error as Error
  })

export const remove = (path: string): Effect.Effect<void> => Effect.promise(() => rm(path, { force: true }))
