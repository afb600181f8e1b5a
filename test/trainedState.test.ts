/**
 * The trained state's file (src/internal/trainedState.ts, and compiledCode.mjs's reader
 * of its modules): what is written reads back the same; a file for another machine or
 * another V8, or a damaged one, is refused with the reason (damaged machine code could
 * crash the process that loads it); old trained states in the SDK's states dir are pruned.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { codeReader } from "../src/internal/compiledCode.mjs"
import * as StateFile from "../src/internal/stateFile.ts"
import * as TrainedState from "../src/internal/trainedState.ts"

const root = mkdtempSync(join(tmpdir(), "v86box-trained-"))
afterAll(() => rmSync(root, { recursive: true, force: true }))

const origin = StateFile.currentOrigin("f".repeat(64), 64)
const bytes = (length: number, seed: number) => Uint8Array.from({ length }, (_, index) => (index * 31 + seed) & 0xff)

const trained: TrainedState.NewTrainedState = {
  agent: "0.9.0",
  origin,
  state: bytes(1000, 1),
  code: {
    engine: { byteLength: 65536 * 3, guestStart: 8192, pages: Uint32Array.of(0, 1, 40), packed: bytes(3 * 4096, 2) },
    modules: [
      { slot: 3, wire: bytes(77, 3), code: bytes(500, 4) },
      { slot: 9, wire: bytes(12, 5), code: bytes(9, 6) }
    ]
  }
}

let files = 0
const written = (change?: (file: Buffer) => void) =>
  Effect.gen(function*() {
    const path = join(root, `t${files++}.trained`)
    yield* TrainedState.write(path, trained)
    if (change !== undefined) {
      const file = readFileSync(path)
      change(file)
      writeFileSync(path, file)
    }
    return path
  })

describe("trained state files", () => {
  it.effect("read back as written; their modules are read from the file as asked for", () =>
    Effect.gen(function*() {
      const path = yield* written()
      const read = yield* TrainedState.read(path, origin)
      expect([read.agent, read.origin, [...read.state]]).toEqual([trained.agent, trained.origin, [...trained.state]])
      const { engine } = read.code
      expect([engine.byteLength, engine.guestStart, [...engine.pages], [...engine.packed]]).toEqual([
        trained.code.engine.byteLength,
        trained.code.engine.guestStart,
        [...trained.code.engine.pages],
        [...trained.code.engine.packed]
      ])
      expect(read.code.path).toBe(path)
      const reader = codeReader(path, () => undefined)
      const modules = read.code.modules.map((entry) => {
        const { code, wire } = reader.read(entry)
        return { slot: entry.slot, wire: [...wire], code: [...new Uint8Array(code)] }
      })
      reader.close()
      expect(modules).toEqual(trained.code.modules.map(({ code, slot, wire }) => ({ slot, wire: [...wire], code: [...code] })))
    }))

  it.effect("are refused for another guest image or memory size, naming why", () =>
    Effect.gen(function*() {
      const path = yield* written()
      const otherImage = yield* Effect.either(TrainedState.read(path, { ...origin, imageFingerprint: "0".repeat(64) }))
      expect(otherImage).toEqual(Either.left("it was made from another guest image"))
      const otherMemory = yield* Effect.either(TrainedState.read(path, { ...origin, memoryMB: 128 }))
      expect(otherMemory).toEqual(Either.left(expect.stringContaining("128 MiB")))
    }))

  it.effect("are refused when made by another V8", () =>
    Effect.gen(function*() {
      const path = yield* written((file) => {
        const at = file.indexOf(`"v8":"${process.versions.v8}"`)
        file.write(`"v8":"${"0".repeat(process.versions.v8.length)}"`, at)
      })
      expect(yield* Effect.either(TrainedState.read(path, origin))).toEqual(Either.left(expect.stringContaining("made by V8")))
    }))

  it.effect("are refused when v86's memory in them is damaged, or the file is cut short", () =>
    Effect.gen(function*() {
      const pagesStart = (file: Buffer) => file.indexOf(0x0a, file.indexOf(0x0a) + 1) + 1 + trained.state.length
      const damaged = yield* written((file) => {
        const at = pagesStart(file) + 12 + 100
        file[at] = file[at]! ^ 0x40
      })
      expect(yield* Effect.either(TrainedState.read(damaged, origin))).toEqual(Either.left("its v86 memory is damaged (sha256 differs)"))
      const path = yield* written()
      writeFileSync(path, readFileSync(path).subarray(0, -10))
      expect(yield* Effect.either(TrainedState.read(path, origin))).toEqual(Either.left("its size does not match its header"))
      writeFileSync(path, "v86box-state 1\n{}\n")
      expect(yield* Effect.either(TrainedState.read(path, origin))).toEqual(Either.left("not a v86box trained state"))
      expect(yield* Effect.either(TrainedState.read(join(root, "missing"), origin))).toEqual(Either.left("no such file"))
    }))

  it.effect("exists: one for this machine and V8 whose size fits its header; not for another machine, a cut file or none", () =>
    Effect.gen(function*() {
      const path = yield* written()
      expect(yield* TrainedState.exists(path, origin)).toBe(true)
      expect(yield* TrainedState.exists(path, { ...origin, memoryMB: 128 })).toBe(false)
      expect(yield* TrainedState.exists(join(root, "missing"), origin)).toBe(false)
      const cut = yield* written()
      writeFileSync(cut, readFileSync(cut).subarray(0, -10))
      expect(yield* TrainedState.exists(cut, origin)).toBe(false)
      writeFileSync(cut, "v86box-state 1\n{}\n")
      expect(yield* TrainedState.exists(cut, origin)).toBe(false)
    }))

  it.effect("readOption: none for a missing file; a damaged one is removed, so that training makes a new one", () =>
    Effect.gen(function*() {
      expect(yield* TrainedState.readOption(join(root, "missing"), origin)).toEqual(Option.none())
      const path = yield* written()
      expect(Option.isSome(yield* TrainedState.readOption(path, origin))).toBe(true)
      // One bit of v86's memory in it flipped: the header and size still fit.
      const damaged = yield* written((file) => {
        const at = file.indexOf(0x0a, file.indexOf(0x0a) + 1) + 1 + trained.state.length + 12 + 100
        file[at] = file[at]! ^ 1
      })
      expect(yield* TrainedState.exists(damaged, origin)).toBe(true)
      expect(yield* TrainedState.readOption(damaged, origin)).toEqual(Option.none())
      expect(existsSync(damaged)).toBe(false)
      expect(existsSync(path)).toBe(true)
    }))

  it.effect("a damaged module is not handed out: reading it says so and throws", () =>
    Effect.gen(function*() {
      const path = yield* written()
      const read = yield* TrainedState.read(path, origin)
      const second = read.code.modules[1]!
      const file = readFileSync(path)
      file[second.offset + second.wireBytes + 2] = file[second.offset + second.wireBytes + 2]! ^ 1
      writeFileSync(path, file)
      let told = 0
      const reader = codeReader(path, () => told++)
      expect([...reader.read(read.code.modules[0]!).wire]).toEqual([...trained.code.modules[0]!.wire])
      expect(() => reader.read(second)).toThrow(/is damaged \(the module for slot 9\)/)
      expect(told).toBe(1)
      reader.close()
    }))

  it.effect("are named after their warm-start state; in the states dir, only the newest two stay", () =>
    Effect.gen(function*() {
      const dir = join(root, "states")
      const path = (c: string) => TrainedState.pathFor(join(dir, `${c.repeat(32)}.v86state`))
      expect(path("a")).toMatch(/\/a{32}\.v86state\.[0-9a-f]{16}\.trained$/)
      for (const [index, c] of ["a", "b", "c"].entries()) {
        yield* TrainedState.write(path(c), trained)
        const at = new Date(Date.now() - (10 - index) * 3600_000)
        utimesSync(path(c), at, at)
      }
      yield* TrainedState.write(path("d"), trained)
      // "c" is the newest other; "a" and "b" are older than an hour.
      expect(readdirSync(dir).sort()).toEqual([path("c"), path("d")].map((p) => p.slice(dir.length + 1)))
    }))
})
