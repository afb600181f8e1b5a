/**
 * What the SDK keeps in assetsDir (src/internal/cacheFiles.ts, warmStart.ts): older
 * states and disks are removed when a new one is written; those written within the
 * hour, the newest few, other files and a state file of the caller's choosing are not.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as CacheFiles from "../src/internal/cacheFiles.ts"
import * as WarmStart from "../src/internal/warmStart.ts"
import * as StateFile from "../src/internal/stateFile.ts"

const root = mkdtempSync(join(tmpdir(), "v86box-cachefiles-"))
afterAll(() => rmSync(root, { recursive: true, force: true }))

const HOUR = 3600_000
let dirs = 0
/** A fresh dir with `files`: name -> hours since it was written. */
const dirWith = (files: Record<string, number>) => {
  const dir = join(root, `d${dirs++}`)
  mkdirSync(dir, { recursive: true })
  for (const [name, hours] of Object.entries(files)) {
    writeFileSync(join(dir, name), name)
    const at = new Date(Date.now() - hours * HOUR)
    utimesSync(join(dir, name), at, at)
  }
  return dir
}
const names = /^f\d+(\..+\.partial)?$/

describe("pruning a cache dir", () => {
  it.effect("keeps the newest and any written within the hour; removes the rest, partial leftovers too", () =>
    Effect.gen(function*() {
      const dir = dirWith({ f1: 0.1, f2: 5, f3: 10, f4: 20, f5: 0.5, "f6.x1.partial": 3, "f7.x2.partial": 0.2, other: 50 })
      const removed = yield* CacheFiles.prune(dir, { names, keep: 3, except: join(dir, "f1") })
      expect([...removed].sort()).toEqual(["f3", "f4", "f6.x1.partial"])
      // The three newest: f1 (the file just written), f5 (also within the hour) and f2;
      // f7: a write in progress; other: not a name of ours.
      expect(readdirSync(dir).sort()).toEqual(["f1", "f2", "f5", "f7.x2.partial", "other"])
    }))

  it.effect("a missing dir is nothing to do", () =>
    Effect.gen(function*() {
      expect(yield* CacheFiles.prune(join(root, "missing"), { names, keep: 1, except: "" })).toEqual([])
    }))
})

describe("warm-start states", () => {
  const saved = { agent: "0.2.0", origin: StateFile.currentOrigin("f".repeat(64), 64), state: new Uint8Array(16) }
  const stateName = (c: string) => `${c.repeat(32)}.v86state`

  it.effect("writing a new state removes older states, keeping the three newest others", () =>
    Effect.gen(function*() {
      const dir = join(dirWith({}), "states")
      mkdirSync(dir)
      // States of other images, written 2 to 6 hours ago ("a" the newest).
      ;["a", "b", "c", "d", "e"].forEach((c, i) => {
        const path = join(dir, stateName(c))
        writeFileSync(path, "old state")
        const at = new Date(Date.now() - (2 + i) * HOUR)
        utimesSync(path, at, at)
      })
      writeFileSync(join(dir, "mine.v86state"), "a snapshot of the user's")
      utimesSync(join(dir, "mine.v86state"), new Date(0), new Date(0))
      const path = join(dir, stateName("0"))
      yield* WarmStart.write(path, saved, true)
      expect(readdirSync(dir).sort()).toEqual([stateName("0"), stateName("a"), stateName("b"), stateName("c"), "mine.v86state"].sort())
    }))

  it.effect("a state file of the caller's choosing prunes nothing", () =>
    Effect.gen(function*() {
      const dir = dirWith({})
      const others = [stateName("a"), stateName("b")]
      for (const name of others) {
        writeFileSync(join(dir, name), "x")
        utimesSync(join(dir, name), new Date(0), new Date(0))
      }
      yield* WarmStart.write(join(dir, stateName("0")), saved, false)
      expect(readdirSync(dir).sort()).toEqual([stateName("0"), ...others].sort())
    }))
})
