/**
 * Warm start against live VMs: the first boot saves its state, later sandboxes resume
 * from it, resumed sandboxes never share randomness, and a broken state never hurts.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { mkdtempSync, readdirSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createHash } from "node:crypto"
import { V86Box } from "../src/index.ts"
import { dropRecycled, reusedEmulatorCount } from "../src/internal/v86Machine.ts"

const withBox = <A, E>(options: Parameters<typeof V86Box.layer>[0], use: (box: V86Box.Service) => Effect.Effect<A, E>) =>
  Effect.scoped(Effect.flatMap(Layer.build(V86Box.layer(options)), (context) => use(Context.get(context, V86Box))))

const sample = (box: V86Box.Service) =>
  box.exec("head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; mktemp; date +%s")

describe("warm start", () => {
  it.live("the first boot saves a state; two sandboxes resumed from it differ in randomness and clock is now", () =>
    Effect.gen(function*() {
      const assetsDir = mkdtempSync(join(tmpdir(), "v86box-warm-"))
      // No standby: each sandbox here is resumed from the state file.
      const cold = yield* withBox({ assetsDir, standby: false }, (box) => Effect.zip(box.status, sample(box)))
      expect(readdirSync(join(assetsDir, "states"))).toHaveLength(1)
      const [first, second] = yield* Effect.all([
        withBox({ assetsDir, standby: false }, (box) => Effect.zip(box.status, sample(box))),
        withBox({ assetsDir, standby: false }, (box) => Effect.zip(box.status, sample(box)))
      ], { concurrency: 2 })
      const [randomA, tempA, clockA] = first[1].stdout.trim().split("\n")
      const [randomB, tempB] = second[1].stdout.trim().split("\n")
      expect(randomA).toMatch(/^[0-9a-f]{32}$/)
      expect(randomA).not.toBe(randomB)
      expect(tempA).not.toBe(tempB)
      expect(Math.abs(Number(clockA) - Date.now() / 1000)).toBeLessThan(120)
      // Resuming skips the kernel boot: the agent answers sooner than after the cold boot.
      expect(first[0].bootMillis).toBeLessThan(cold[0].bootMillis)
      expect([cold[0].startedFrom, first[0].startedFrom, second[0].startedFrom]).toEqual(["boot", "warmStart", "warmStart"])
    }), 180_000)

  it.live("a sandbox resumed in a new emulator reads the host's time, not the time its INIT was sent", () =>
    Effect.gen(function*() {
      const assetsDir = mkdtempSync(join(tmpdir(), "v86box-warm-"))
      yield* withBox({ assetsDir, standby: false }, (box) => box.exec("true"))
      // A new emulator: it runs the guest's first steps after the resume interpreted, and
      // took INIT in ~0.3-0.7 s after it was sent. (The margin allows for a busy host
      // delaying the second INIT that sets the clock right.)
      dropRecycled()
      const [before, guest, after] = yield* withBox({ assetsDir, standby: false }, (box) =>
        Effect.gen(function*() {
          const before = Date.now()
          const result = yield* box.exec("date +%s%3N")
          return [before, Number(result.stdout.trim()), Date.now()] as const
        }))
      expect(guest).toBeGreaterThanOrEqual(before - 150)
      expect(guest).toBeLessThanOrEqual(after + 150)
    }), 180_000)

  it.live("a released sandbox's emulator serves the next one, which sees nothing of the previous guest and computes right", () =>
    Effect.gen(function*() {
      const assetsDir = mkdtempSync(join(tmpdir(), "v86box-warm-"))
      yield* withBox({ assetsDir, standby: false }, (box) => box.exec("true"))
      const squares = Array.from({ length: 3000 }, (_, i) => (i + 1) ** 2).reduce((a, b) => a + b)
      const digest = createHash("sha256").update("ab".repeat(50_000)).digest("hex")
      for (let round = 1; round <= 3; round++) {
        const reusedBefore = reusedEmulatorCount()
        const result = yield* withBox({ assetsDir, standby: false }, (box) =>
          Effect.gen(function*() {
            const left = yield* box.exec("echo \"tmp:$(ls /tmp)\"; pgrep -c -f 'sleep [1]000' || true; hostname")
            const computed = yield* box.exec(
              "seq 1 3000 | awk '{ s += $1 * $1 } END { print s }'; head -c 100000 /dev/zero | tr '\\0' x | sed 's/xx/ab/g' | tr -d '\\n' | sha256sum | cut -d' ' -f1; echo $((12345 * 6789))"
            )
            // What this guest leaves behind: a file and a process outside the command's group.
            yield* box.exec("echo secret > /tmp/left-by-" + round + "; setsid sleep 1000 >/dev/null 2>&1 &")
            return { left: left.stdout.split("\n"), computed: computed.stdout, status: yield* box.status }
          }))
        expect(reusedEmulatorCount()).toBe(reusedBefore + 1)
        expect(result.status.startedFrom).toBe("warmStart")
        expect(result.left.slice(0, 3)).toEqual(["tmp:", "0", expect.stringMatching(/^v86box-[0-9a-f]{8}$/)])
        expect(result.computed).toBe(`${squares}\n${digest}\n${12345 * 6789}\n`)
      }
    }), 240_000)

  it.live("a corrupt state file is replaced, not fatal", () =>
    Effect.gen(function*() {
      const assetsDir = mkdtempSync(join(tmpdir(), "v86box-warm-"))
      const stateFile = join(assetsDir, "broken.v86state")
      writeFileSync(stateFile, "v86box-state 1\n{\"agent\":\"0.1.0\"}\nthis is not a machine state")
      const result = yield* withBox({ assetsDir, stateFile, standby: false }, (box) => Effect.zip(box.status, box.exec("echo still works")))
      expect(result[1].stdout).toBe("still works\n")
      expect(result[0].startedFrom).toBe("boot")
      const again = yield* withBox({ assetsDir, stateFile, standby: false }, (box) => Effect.zip(box.status, box.exec("echo resumed")))
      expect(again[1].stdout).toBe("resumed\n")
      expect(again[0].startedFrom).toBe("warmStart")
    }), 180_000)

  it.live("warmStart: false boots cold and saves nothing", () =>
    Effect.gen(function*() {
      const assetsDir = mkdtempSync(join(tmpdir(), "v86box-warm-"))
      const result = yield* withBox({ assetsDir, warmStart: false }, (box) => box.exec("echo cold"))
      expect(result.stdout).toBe("cold\n")
      expect(readdirSync(assetsDir)).not.toContain("states")
    }), 180_000)
})
