/**
 * Warm start: the first cold boot of an image saves the booted machine's state, and
 * later sandboxes resume from it instead of booting (hundreds of ms instead of seconds).
 *
 * The state file (see stateFile.ts) is keyed by everything that makes a state unusable
 * when it changes: the image fingerprint, guest RAM, the v86 version (a state only fits
 * its own emulator) and the protocol version; and by how the machine was booted (a
 * state resumes whatever the firmware, but carries the memory map that boot gave it).
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { createHash } from "node:crypto"
import { rm } from "node:fs/promises"
import { homedir } from "node:os"
import { dirname, join } from "node:path"
import * as CacheFiles from "./cacheFiles.ts"
import type { Firmware } from "../Options.ts"
import { PROTOCOL_VERSION } from "./protocol.ts"
import * as StateFile from "./stateFile.ts"
import { v86Version } from "./v86Machine.ts"

export interface StateKey {
  readonly imageFingerprint: string
  readonly memoryMB: number
  readonly firmware: Firmware
}

export const defaultStatePath = (key: StateKey, assetsDir: string | undefined): string => {
  const id = createHash("sha256")
    .update(`${key.imageFingerprint}\n${key.memoryMB}\n${v86Version}\n${PROTOCOL_VERSION}\nfirmware ${key.firmware}`)
    .digest("hex")
    .slice(0, 32)
  return join(assetsDir ?? join(homedir(), ".v86box"), "states", `${id}.v86state`)
}

/** The names defaultStatePath gives, and StateFile.write's leftovers of them. */
const DEFAULT_STATE_NAME = /^[0-9a-f]{32}\.v86state(\..+\.partial)?$/

/** States kept in `assetsDir/states` however old: the one just written and the three newest others. */
const STATES_KEPT = 4

/** The saved state, if the file exists and is one of ours; anything unreadable counts as none. */
export const read = (path: string): Effect.Effect<Option.Option<StateFile.SavedState>> =>
  StateFile.read(path).pipe(Effect.option)

/**
 * Writes the state. In the SDK's own dir (`assetsDir/states`: `inStatesDir`, the default
 * path) it then makes room: older states go (see cacheFiles.ts). The dir of a
 * `stateFile` of the caller's choosing is never pruned.
 */
export const write = (path: string, saved: StateFile.SavedState, inStatesDir: boolean): Effect.Effect<void, Error> =>
  StateFile.write(path, StateFile.encode(saved)).pipe(
    Effect.zipRight(
      inStatesDir
        ? CacheFiles.prune(dirname(path), { names: DEFAULT_STATE_NAME, keep: STATES_KEPT, except: path })
        : Effect.void
    )
  )

export const remove = (path: string): Effect.Effect<void> => Effect.promise(() => rm(path, { force: true }))
