/**
 * The sandbox pool against live VMs: fresh sandboxes share nothing between uses, reused
 * ones keep their files, a failed sandbox is replaced, idle ones are shut down, and
 * forks of a snapshot can be pooled.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { runningWorkerCount } from "../src/internal/v86Machine.ts"
import { V86Box, V86BoxPool, type V86BoxPoolOptions } from "../src/index.ts"

const withPool = <A, E>(options: V86BoxPoolOptions, use: (pool: V86BoxPool.Service) => Effect.Effect<A, E>) =>
  Effect.scoped(Effect.flatMap(Layer.build(V86BoxPool.layer(options)), (context) => use(Context.get(context, V86BoxPool))))

const hostname = (pool: V86BoxPool.Service) => Effect.map(pool.exec("hostname"), (result) => result.stdout.trim())

/** Waits (bounded) until no emulator worker runs, and says how many still do. */
const workersLeft = Effect.gen(function*() {
  for (let attempt = 0; attempt < 200 && runningWorkerCount() > 0; attempt++) yield* Effect.sleep("50 millis")
  return runningWorkerCount()
})

describe("V86BoxPool", () => {
  it.live("fresh: each use gets a new sandbox; uses run side by side; closing the pool ends every worker", () =>
    Effect.gen(function*() {
      yield* withPool({ size: 2, min: 1 }, (pool) =>
        Effect.gen(function*() {
          const first = yield* pool.use((box) =>
            Effect.zipRight(box.exec("echo left behind > /root/trace"), box.exec("hostname"))
          )
          const second = yield* pool.exec("cat /root/trace 2>/dev/null || echo none; hostname")
          expect(second.stdout).toMatch(/^none\nv86box-/)
          expect(second.stdout).not.toContain(first.stdout.trim())
          // Two uses at once hold two sandboxes (each sees itself alone in its guest).
          const both = yield* Effect.all([
            pool.use((box) => Effect.zipRight(box.exec("touch /tmp/mine"), box.exec("ls /tmp; hostname"))),
            pool.use((box) => Effect.zipRight(box.exec("touch /tmp/mine"), box.exec("ls /tmp; hostname")))
          ], { concurrency: 2 })
          expect(both[0].stdout).toMatch(/^mine\nv86box-/)
          expect(both[1].stdout).toMatch(/^mine\nv86box-/)
          expect(both[0].stdout).not.toBe(both[1].stdout)
        }))
      expect(yield* workersLeft).toBe(0)
    }), 240_000)

  it.live("reuse: one sandbox serves use after use, files and all; a dead one is replaced", () =>
    withPool({ size: 1, mode: "reuse" }, (pool) =>
      Effect.gen(function*() {
        yield* pool.exec("echo kept > /root/trace")
        const name = yield* hostname(pool)
        const again = yield* pool.exec("cat /root/trace; hostname")
        expect(again.stdout).toBe(`kept\n${name}\n`)
        const crash = yield* Effect.flip(pool.exec("echo c > /proc/sysrq-trigger"))
        expect(crash._tag).toBe("MachineError")
        const replaced = yield* pool.exec("cat /root/trace 2>/dev/null || echo none; hostname")
        expect(replaced.stdout).toMatch(/^none\nv86box-/)
        expect(replaced.stdout).not.toContain(name)
      })), 240_000)

  it.live("idle sandboxes above min are shut down after timeToLive", () =>
    Effect.gen(function*() {
      const left = yield* withPool({ size: 1, min: 0, mode: "reuse", timeToLive: "500 millis" }, (pool) =>
        Effect.zipRight(pool.exec("true"), workersLeft))
      expect(left).toBe(0)
    }), 120_000)

  it.live("a pool of forks: every sandbox starts from the snapshot", () =>
    Effect.gen(function*() {
      const path = join(mkdtempSync(join(tmpdir(), "v86box-pool-")), "base.v86state")
      yield* Effect.scoped(Effect.gen(function*() {
        const box = Context.get(yield* Layer.build(V86Box.layer()), V86Box)
        yield* box.exec("echo from the snapshot > /root/base")
        yield* box.snapshot(path)
      }))
      const results = yield* withPool({ size: 2, sandbox: { fromSnapshot: path } }, (pool) =>
        Effect.all([pool.exec("cat /root/base"), pool.exec("cat /root/base")], { concurrency: 2 }))
      expect(results.map((result) => result.stdout)).toEqual(["from the snapshot\n", "from the snapshot\n"])
    }), 240_000)

  it.live("bad options fail with InvalidOptions before any sandbox starts", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(withPool({ size: 0, min: 3, sandbox: { memoryMB: 1 } }, () => Effect.void))
      expect(error._tag).toBe("InvalidOptions")
      expect(error.issues.join("\n")).toMatch(/size/)
      expect(error.issues.join("\n")).toMatch(/sandbox\.memoryMB/)
      const tooMany = yield* Effect.flip(withPool({ size: 1, min: 2 }, () => Effect.void))
      expect(tooMany.issues).toEqual(["min: 2 is more than size (1)"])
      expect(runningWorkerCount()).toBe(0)
    }))

  it("the Promise API", async () => {
    await using pool = await V86BoxPool.open({ size: 1 })
    expect((await pool.exec("echo hi")).stdout).toBe("hi\n")
  }, 120_000)
})
