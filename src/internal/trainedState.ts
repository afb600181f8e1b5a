/**
 * The trained state: the warm-start state after a standby's warm-up, saved with the guest
 * code v86 compiled meanwhile (compiledCode.mjs). A new emulator resumed from it runs the
 * guest's common paths (bash, fork, exec, the agent) compiled from its first command,
 * where one resumed from the plain warm-start state runs them interpreted for hundreds
 * of commands (docs/profiling.md). The first standby of an image warmed up in a new
 * emulator trains it (box.ts); later processes resume from it.
 *
 * The guest in it is the warm-start guest after the warm-up's commands (`true` and the
 * common tools), before any INIT: what a sandbox taking the standby gets anyway, and each
 * sandbox still gets its own time, entropy and hostname.
 *
 * Its file sits beside the warm-start state's, named after it and after what V8's
 * machine code needs to load (V8's version, the CPU): `<state>.<code id>.trained`.
 * Format: a magic line, one JSON line (what it was made from, the sizes of its parts and
 * their sha256), then the raw v86 state, v86's memory pages (their page numbers, 32-bit
 * little-endian, then their bytes) and each module's bytes and machine code. V8 checks
 * only that machine code was made by the same V8 and flags, not that it is intact, and
 * loading damaged code could crash the process: so each part is checked against its
 * sha256 before use. The modules are read by the emulator's worker as v86 first calls
 * them (compiledCode.mjs): a resume reads only the state and v86's memory.
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import { createHash } from "node:crypto"
import { type FileHandle, open, rm } from "node:fs/promises"
import { arch, cpus } from "node:os"
import { basename, dirname } from "node:path"
import * as CacheFiles from "./cacheFiles.ts"
import * as StateFile from "./stateFile.ts"
import type { SavedCode, TrainedCode } from "./v86Machine.ts"

const MAGIC = "v86box-trained 1\n"

/** A trained state as read: its modules stay in the file. */
export interface TrainedState {
  /** The agent version the warm-start state announced. */
  readonly agent: string
  readonly origin: StateFile.StateOrigin
  /** The raw v86 state, in a buffer of its own. */
  readonly state: Uint8Array
  readonly code: TrainedCode
}

/** A trained state to write: its modules in memory, as the trained emulator saved them. */
export interface NewTrainedState {
  readonly agent: string
  readonly origin: StateFile.StateOrigin
  readonly state: Uint8Array
  readonly code: SavedCode
}

/** What V8's saved machine code needs to load in this process: V8 itself and the CPU. */
const codeId = createHash("sha256")
  .update(`${process.versions.v8}\n${arch()}\n${cpus()[0]?.model ?? "?"}`)
  .digest("hex")
  .slice(0, 16)

/** The trained state's file for the warm-start state at `statePath`. */
export const pathFor = (statePath: string): string => `${statePath}.${codeId}.trained`

/** The names `pathFor` gives in the SDK's states dir, and the leftovers of writing them. */
const DEFAULT_TRAINED_NAME = /^[0-9a-f]{32}\.v86state\.[0-9a-f]{16}\.trained(\..+\.partial)?$/
/** Trained states (~60 MB each) kept in `assetsDir/states` however old: the one just written and the newest other. */
const TRAINED_KEPT = 2

interface Header {
  readonly agent: string
  readonly origin: StateFile.StateOrigin
  readonly v8: string
  readonly stateBytes: number
  /** `sha256`: of the page numbers and pages. */
  readonly engine: { readonly byteLength: number; readonly guestStart: number; readonly pages: number; readonly sha256: string }
  /** Per module: its slot, its bytes' length, its machine code's length, the sha256 of both. */
  readonly modules: ReadonlyArray<readonly [slot: number, wire: number, code: number, sha256: string]>
}

const PAGE_BYTES = 4096

const sha256Of = (parts: ReadonlyArray<Uint8Array>) => parts.reduce((hash, part) => hash.update(part), createHash("sha256")).digest("hex")

/** The file's bytes, as the parts to write one after another. */
const encode = (trained: NewTrainedState): Array<Uint8Array> => {
  const { engine, modules } = trained.code
  const pageNumbers = Buffer.alloc(engine.pages.length * 4)
  engine.pages.forEach((page, index) => pageNumbers.writeUInt32LE(page, index * 4))
  const header: Header = {
    agent: trained.agent,
    origin: trained.origin,
    v8: process.versions.v8,
    stateBytes: trained.state.byteLength,
    engine: {
      byteLength: engine.byteLength,
      guestStart: engine.guestStart,
      pages: engine.pages.length,
      sha256: sha256Of([pageNumbers, engine.packed])
    },
    modules: modules.map((module) =>
      [module.slot, module.wire.byteLength, module.code.byteLength, sha256Of([module.wire, module.code])] as const
    )
  }
  return [
    Buffer.from(`${MAGIC}${JSON.stringify(header)}\n`),
    trained.state,
    pageNumbers,
    engine.packed,
    ...modules.flatMap((module) => [module.wire, module.code])
  ]
}

/** Enough of a file's start to hold its header lines (a module list of ~1,000 entries). */
const HEADER_BYTES = 64 * 1024

const isHeader = (value: unknown): value is Header => {
  const header = value as Header
  return typeof header === "object" && header !== null && typeof header.agent === "string" &&
    typeof header.origin === "object" && typeof header.v8 === "string" && Number.isSafeInteger(header.stateBytes) &&
    typeof header.engine === "object" && Number.isSafeInteger(header.engine?.pages) &&
    typeof header.engine.sha256 === "string" && Array.isArray(header.modules) &&
    header.modules.every((module) =>
      Array.isArray(module) && module.length === 4 && module.slice(0, 3).every(Number.isSafeInteger) &&
      typeof module[3] === "string"
    )
}

/**
 * The header of the open trained state `file` and where its body starts, if it was made
 * for a machine of `expected` in this V8 and its size is what the header says; why not
 * otherwise. Reads only the file's start.
 */
const checkHeader = async (
  file: FileHandle,
  expected: StateFile.StateOrigin
): Promise<{ readonly header: Header; readonly start: number } | string> => {
  const { size } = await file.stat()
  const head = Buffer.alloc(Math.min(size, HEADER_BYTES))
  await file.read(head, 0, head.length, 0)
  const split = StateFile.splitHeader(head, MAGIC, "trained state")
  if (Either.isLeft(split)) return split.left
  const header = split.right.header
  if (!isHeader(header)) return "its header is not a trained state's"
  const mismatch = StateFile.mismatch(header.origin, expected)
  if (mismatch !== undefined) return mismatch
  if (header.v8 !== process.versions.v8) return `it was made by V8 ${header.v8}, this is ${process.versions.v8}`
  const start = split.right.bodyStart
  const modulesBytes = header.modules.reduce((total, [, wire, code]) => total + wire + code, 0)
  const bodyBytes = header.stateBytes + header.engine.pages * (4 + PAGE_BYTES) + modulesBytes
  if (start + bodyBytes !== size) return "its size does not match its header"
  return { header, start }
}

/**
 * The trained state at `path` if it is one made for a machine of `expected` in this V8;
 * why not otherwise ("no such file", a broken file...).
 */
export const read = (path: string, expected: StateFile.StateOrigin): Effect.Effect<TrainedState, string> =>
  Effect.tryPromise({
    try: async (): Promise<TrainedState | string> => {
      const file = await open(path, "r")
      try {
        const checked = await checkHeader(file, expected)
        if (typeof checked === "string") return checked
        const { header, start } = checked
        const pagesBytes = header.engine.pages * 4
        const packedBytes = header.engine.pages * PAGE_BYTES
        const state = new Uint8Array(header.stateBytes)
        const engine = new Uint8Array(pagesBytes + packedBytes)
        const [stateRead, engineRead] = [
          await file.read(state, 0, state.length, start),
          await file.read(engine, 0, engine.length, start + header.stateBytes)
        ]
        if (stateRead.bytesRead !== state.length || engineRead.bytesRead !== engine.length) return "it is truncated"
        if (sha256Of([engine]) !== header.engine.sha256) return "its v86 memory is damaged (sha256 differs)"
        const pages = new Uint32Array(header.engine.pages)
        const pageNumbers = Buffer.from(engine.buffer, 0, pagesBytes)
        for (let index = 0; index < pages.length; index++) pages[index] = pageNumbers.readUInt32LE(index * 4)
        let offset = start + header.stateBytes + pagesBytes + packedBytes
        const modules = header.modules.map(([slot, wireBytes, codeBytes, sha256]) => {
          const entry = { slot, offset, wireBytes, codeBytes, sha256 }
          offset += wireBytes + codeBytes
          return entry
        })
        return {
          agent: header.agent,
          origin: header.origin,
          state,
          code: {
            path,
            engine: {
              byteLength: header.engine.byteLength,
              guestStart: header.engine.guestStart,
              pages,
              packed: engine.subarray(pagesBytes)
            },
            modules
          }
        }
      } finally {
        await file.close()
      }
    },
    catch: StateFile.readFailure
  }).pipe(Effect.flatMap((result) => typeof result === "string" ? Effect.fail(result) : Effect.succeed(result)))

/**
 * Whether there is a trained state at `path` for a machine of `expected` in this V8, by its
 * header and size alone: the training's "is there one already?", asked at each idle
 * moment, without reading and hashing ~60 MB. A body damaged since it was written is found
 * when a sandbox or standby resumes it (`readOption`, which removes the file), and the
 * next idle moment trains again.
 */
export const exists = (path: string, expected: StateFile.StateOrigin): Effect.Effect<boolean> =>
  Effect.promise(async () => {
    try {
      const file = await open(path, "r")
      try {
        return typeof await checkHeader(file, expected) !== "string"
      } finally {
        await file.close()
      }
    } catch {
      return false
    }
  })

/**
 * `read`, with anything unreadable as none. A file that is there but will not do (damaged,
 * cut short, made for another machine) is removed, so that the next idle moment trains a
 * new one: `exists`, the training's check, looks at the header and size only.
 */
export const readOption = (path: string, expected: StateFile.StateOrigin): Effect.Effect<Option.Option<TrainedState>> =>
  read(path, expected).pipe(
    Effect.map(Option.some),
    Effect.catchAll((reason) =>
      reason === "no such file"
        ? Effect.succeedNone
        : Effect.logWarning(`v86box: the trained state ${path} will not do (${reason}); removing it`).pipe(
          Effect.zipRight(Effect.tryPromise(() => rm(path, { force: true })).pipe(Effect.ignore)),
          Effect.as(Option.none())
        )
    )
  )

/**
 * Writes it atomically beside its warm-start state; in the SDK's states dir older trained
 * states then go (cacheFiles.ts).
 */
export const write = (path: string, trained: NewTrainedState): Effect.Effect<void, Error> =>
  StateFile.write(path, encode(trained)).pipe(
    Effect.zipRight(
      DEFAULT_TRAINED_NAME.test(basename(path))
        ? CacheFiles.prune(dirname(path), { names: DEFAULT_TRAINED_NAME, keep: TRAINED_KEPT, except: path })
        : Effect.void
    )
  )

export const remove = (path: string): Effect.Effect<void> => Effect.promise(() => rm(path, { force: true }))
