/**
 * The trained state against live VMs (src/internal/trainedState.ts): a process that has
 * a warm standby and nothing else to do trains it; a sandbox in a new emulator then resumes it with the guest code
 * compiled, computes right and is as fresh as any resumed sandbox; code V8 will not load
 * means a resume without it; a damaged module or a trained state that does not resume
 * means it is removed; and with its warm-start state pruned, it still serves sandboxes
 * and their standby.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import { createHash } from "node:crypto"
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { V86Box } from "../src/index.ts"
import * as Standby from "../src/internal/standby.ts"
import * as TrainedState from "../src/internal/trainedState.ts"
import { dropRecycled, savedCodeLoads, type TrainedCode } from "../src/internal/v86Machine.ts"

const withBox = <A, E>(options: Parameters<typeof V86Box.layer>[0], use: (box: V86Box.Service) => Effect.Effect<A, E>) =>
  Effect.scoped(Effect.flatMap(Layer.build(V86Box.layer(options)), (context) => use(Context.get(context, V86Box))))

/** Drops the standby and the recycled emulator: the next sandbox starts a new emulator. */
const nothingKept = Effect.zipRight(Standby.clear, Effect.sync(dropRecycled))

const assetsDir = mkdtempSync(join(tmpdir(), "v86box-trained-"))
const statesDir = join(assetsDir, "states")
const trainedFile = () => readdirSync(statesDir).find((name) => name.endsWith(".trained"))
/** The trained state the first test made, and its bytes: each later test starts from them. */
let trainedPath = ""
let asTrained = Buffer.alloc(0)
const freshTrained = () => {
  writeFileSync(trainedPath, asTrained)
  return trainedPath
}

/** Work whose answer the host knows: wrong guest code would get it wrong. */
const computation = "seq 1 3000 | awk '{ s += $1 * $1 } END { print s }'; " +
  "head -c 100000 /dev/zero | tr '\\0' x | sed 's/xx/ab/g' | tr -d '\\n' | sha256sum | cut -d' ' -f1; " +
  "echo $((12345 * 6789)); x=0; for i in $(seq 1 500); do x=$((x + i % 7)); done; echo $x"
const expected = [
  String(Array.from({ length: 3000 }, (_, i) => (i + 1) ** 2).reduce((a, b) => a + b)),
  createHash("sha256").update("ab".repeat(50_000)).digest("hex"),
  String(12345 * 6789),
  String(Array.from({ length: 500 }, (_, i) => (i + 1) % 7).reduce((a, b) => a + b))
].join("\n") + "\n"

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")

/**
 * Changes a trained state's file in place: `change` edits its bytes and returns header
 * strings to replace (a sha256 by another).
 */
const editTrained = (
  path: string,
  change: (
    file: Buffer,
    layout: { stateStart: number; stateBytes: number; modules: ReadonlyArray<TrainedCode["modules"][number]> }
  ) => ReadonlyArray<readonly [string, string]>
) =>
  Effect.gen(function*() {
    const file = readFileSync(path)
    const headerEnd = file.indexOf(0x0a, file.indexOf(0x0a) + 1)
    const header = JSON.parse(file.subarray(file.indexOf(0x0a) + 1, headerEnd).toString("utf8"))
    const trained = yield* Effect.orDie(TrainedState.read(path, header.origin))
    const replacements = change(file, { stateStart: headerEnd + 1, stateBytes: header.stateBytes, modules: trained.code.modules })
    let text = file.subarray(0, headerEnd).toString("latin1")
    for (const [from, to] of replacements) text = text.replace(from, to)
    writeFileSync(path, Buffer.concat([Buffer.from(text, "latin1"), file.subarray(headerEnd)]))
  })

const sample = (box: V86Box.Service) =>
  box.exec("head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; hostname; date +%s%3N")

describe("the trained state", () => {
  it.live("is trained while the process is idle; a new emulator resumes it with its code, computes right and is fresh", () =>
    Effect.gen(function*() {
      // Cold boot (saves the warm-start state); its release makes the standby, and once
      // that is warm and the process idle, a trainer runs.
      yield* withBox({ assetsDir }, (box) => box.exec("true"))
      for (let waited = 0; Standby.trainingState() !== "running" && waited < 60_000; waited += 100) yield* Effect.sleep(100)
      expect(Standby.trainingState()).toBe("running")
      // A sandbox that starts stops it; the next idle moment (after its release, once the
      // next standby is warm) starts it again.
      const during = yield* withBox({ assetsDir }, (box) => Effect.zip(Effect.sync(Standby.trainingState), box.exec("echo ok")))
      expect(during[0]).toBe("none")
      expect(during[1].stdout).toBe("ok\n")
      expect(trainedFile()).toBeUndefined()
      for (let waited = 0; trainedFile() === undefined && waited < 150_000; waited += 250) yield* Effect.sleep(250)
      expect(trainedFile()).toBeDefined()
      for (let waited = 0; Standby.trainingState() !== "none" && waited < 10_000; waited += 100) yield* Effect.sleep(100)
      expect(Standby.trainingState()).toBe("none")
      trainedPath = join(statesDir, trainedFile()!)
      asTrained = readFileSync(trainedPath)
      yield* nothingKept

      const loadsBefore = savedCodeLoads().loaded
      const results = yield* Effect.all([
        withBox({ assetsDir, standby: false }, (box) =>
          Effect.all([box.exec(computation), sample(box), box.exec("echo out; echo err >&2; exit 7")])),
        withBox({ assetsDir, standby: false }, (box) => Effect.all([box.exec(computation), sample(box)]))
      ], { concurrency: 2 })
      expect(savedCodeLoads().loaded).toBe(loadsBefore + 2)
      const [[computedA, sampleA, failing], [computedB, sampleB]] = results
      expect(computedA.stdout).toBe(expected)
      expect(computedB.stdout).toBe(expected)
      expect([failing.stdout, failing.stderr, failing.exitCode]).toEqual(["out\n", "err\n", 7])
      const [randomA, hostA, clockA] = sampleA.stdout.trim().split("\n")
      const [randomB, hostB] = sampleB.stdout.trim().split("\n")
      expect(randomA).toMatch(/^[0-9a-f]{32}$/)
      expect(randomA).not.toBe(randomB)
      expect(hostA).not.toBe(hostB)
      expect(Math.abs(Number(clockA) - Date.now())).toBeLessThan(5_000)
    }), 300_000)

  it.live("code V8 will not load: the sandbox resumes the trained state without it, and computes right", () =>
    Effect.gen(function*() {
      const path = freshTrained()
      // V8 checks the magic number at the start of its machine code: this is not V8's
      // code (and its sha256 is made to match, so the file passes as intact).
      yield* editTrained(path, (file, { modules }) => {
        const first = modules[0]!
        file[first.offset + first.wireBytes] = file[first.offset + first.wireBytes]! ^ 0xff
        return [[first.sha256, sha256(file.subarray(first.offset, first.offset + first.wireBytes + first.codeBytes))]]
      })
      yield* nothingKept
      const before = savedCodeLoads()
      const result = yield* withBox({ assetsDir, standby: false }, (box) => Effect.zip(box.exec(computation), box.status))
      expect(savedCodeLoads().loaded).toBe(before.loaded)
      expect(savedCodeLoads().refused.slice(before.refused.length)).toEqual(["V8 would not load the saved machine code"])
      expect(result[0].stdout).toBe(expected)
      expect(result[1].startedFrom).toBe("warmStart")
      expect(existsSync(path)).toBe(true)
    }), 120_000)

  it.live("a damaged module is never run: the trained state is removed, the sandbox resumes without it or fails saying why", () =>
    Effect.gen(function*() {
      const path = freshTrained()
      // Every module but the first (loaded before the resume) has a damaged byte.
      yield* editTrained(path, (file, { modules }) => {
        for (const module of modules.slice(1)) file[module.offset + 5] = file[module.offset + 5]! ^ 1
        return []
      })
      yield* nothingKept
      // The first damaged module v86 calls fails its machine: during the resume (as
      // measured), so the warm-start state serves the sandbox; or on a later command.
      const outcome = yield* withBox({ assetsDir, standby: false }, (box) =>
        Effect.gen(function*() {
          const results = []
          for (let command = 0; command < 20; command++) results.push(yield* box.exec(computation))
          return results
        })).pipe(Effect.either)
      if (Either.isRight(outcome)) {
        for (const result of outcome.right) expect(result.stdout).toBe(expected)
      } else {
        expect(outcome.left.message).toMatch(/is damaged \(the module for slot \d+\)/)
      }
      for (let waited = 0; existsSync(path) && waited < 5_000; waited += 100) yield* Effect.sleep(100)
      expect(existsSync(path)).toBe(false)
    }), 120_000)

  it.live("a trained state whose machine does not resume is removed; the warm-start state serves the sandbox", () =>
    Effect.gen(function*() {
      const path = freshTrained()
      // A v86 state that is not one: v86 cannot restore it.
      yield* editTrained(path, (file, { stateStart, stateBytes }) => {
        file.fill(7, stateStart, stateStart + stateBytes)
        return []
      })
      yield* nothingKept
      const result = yield* withBox({ assetsDir, standby: false }, (box) => Effect.zip(box.exec(computation), box.status))
      expect(result[0].stdout).toBe(expected)
      expect(result[1].startedFrom).toBe("warmStart")
      expect(existsSync(path)).toBe(false)
      // The warm-start state is kept.
      expect(readdirSync(statesDir).filter((name) => name.endsWith(".v86state"))).toHaveLength(1)
    }), 120_000)

  it.live("with the warm-start state pruned, the trained state still serves, and the standby made from it is taken", () =>
    Effect.gen(function*() {
      freshTrained()
      yield* nothingKept
      // Pruning removes a warm-start state written over an hour ago once newer ones
      // exist (cacheFiles.ts), and leaves its trained state.
      for (const name of readdirSync(statesDir).filter((name) => name.endsWith(".v86state"))) rmSync(join(statesDir, name))
      const first = yield* withBox({ assetsDir }, (box) => Effect.zip(box.exec(computation), box.status))
      expect(first[0].stdout).toBe(expected)
      expect(first[1].startedFrom).toBe("warmStart")
      for (let waited = 0; Standby.stateOf() !== "warm" && waited < 60_000; waited += 100) yield* Effect.sleep(100)
      const next = yield* withBox({ assetsDir }, (box) => Effect.zip(box.exec(computation), box.status))
      expect(next[0].stdout).toBe(expected)
      expect(next[1].startedFrom).toBe("standby")
      yield* nothingKept
    }), 120_000)
})
