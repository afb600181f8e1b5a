/**
 * Faults that end the machine: each surfaces as a MachineError within 1 s, a command that
 * was running fails with it, and once the sandbox's scope closes no emulator worker,
 * timer or handle is left in the host process. The guest-side faults are the ones of
 * test/suites/faults.ts (which checks their messages, live and replayed); here they are
 * timed and the host is checked for leftovers. The emulator worker's own crash can only
 * happen live, through a test hook.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { MachineError, V86Box } from "../../src/index.ts"
import { crashWorkersForTesting } from "../../src/internal/v86Machine.ts"
import { faultCases } from "../suites/faults.ts"
import { activeResources, leftoversAfter, report } from "./support.ts"

/** What the issue promises: the fault is reported this fast. */
const promisedMillis = 1000

/**
 * `poweroff -f` first has the emulated CPU start busybox (over a second on a busy host)
 * before the guest goes down, so its time is reported and only bounded loosely; the same
 * power-off path is timed against the promise when set off by sysrq, which acts at once.
 */
const slowToTrigger = new Set(["power-off"])
const faults = [
  ...faultCases,
  { name: "power-off-sysrq", command: "echo o > /proc/sysrq-trigger", reason: /powered off|halted/ }
]

/**
 * Boots a sandbox, runs `fault` (which returns when it set the fault off, and the
 * effect whose failure reports it), then closes the sandbox and counts what is left.
 */
const faultRun = (
  name: string,
  ceilingMillis: number,
  fault: (
    box: V86Box.Service
  ) => Effect.Effect<{ readonly triggeredAt: number; readonly failure: Effect.Effect<unknown, unknown> }, unknown, Scope.Scope>
) =>
  Effect.gen(function*() {
    const before = activeResources()
    const outcome = yield* Effect.scoped(Effect.gen(function*() {
      const box = Context.get(yield* Layer.build(V86Box.layer()), V86Box)
      const { failure, triggeredAt } = yield* fault(box)
      const error = yield* Effect.flip(failure)
      const reportedAfterMillis = Date.now() - triggeredAt
      const stillReady = (yield* box.status).ready
      return { error, reportedAfterMillis, stillReady }
    }))
    const leftovers = yield* leftoversAfter(before)
    const error = outcome.error
    report(`machine fault: ${name}`, {
      reportedAfterMillis: outcome.reportedAfterMillis,
      error: error instanceof MachineError ? error.reason : String(error),
      consoleTailChars: error instanceof MachineError ? error.consoleTail.length : 0,
      leftovers
    })
    expect(error).toBeInstanceOf(MachineError)
    expect(outcome.stillReady).toBe(false)
    expect(outcome.reportedAfterMillis).toBeLessThan(ceilingMillis)
    expect(leftovers).toEqual({ workers: 0, resources: {} })
    return error as MachineError
  }).pipe(Effect.orDie)

describe("faults that end the machine", () => {
  for (const fault of faults) {
    const ceilingMillis = slowToTrigger.has(fault.name) ? 30_000 : promisedMillis
    it.live(`${fault.name}: a MachineError with the console tail within ${ceilingMillis} ms; nothing left on the host`, () =>
      Effect.gen(function*() {
        const error = yield* faultRun(fault.name, ceilingMillis, (box) =>
          Effect.gen(function*() {
            // Timed from the moment the command is seen running, right before the fault.
            const process = yield* box.start(`echo go; ${fault.command}`)
            const marker = yield* Effect.either(Stream.runHead(process.stdout))
            // A fault may be reported before its marker arrives: then it took no time at all.
            return { triggeredAt: Date.now(), failure: marker._tag === "Left" ? Effect.fail(marker.left) : process.exit }
          }))
        expect(error.message).toMatch(fault.reason)
        expect(error.consoleTail.length).toBeGreaterThan(0)
      }), 180_000)
  }

  for (const how of ["throw", "exit"] as const) {
    it.live(`the emulator worker crashes (${how}): the running command fails with a MachineError within 1 s; nothing left on the host`, () =>
      Effect.gen(function*() {
        const error = yield* faultRun(`worker ${how}`, promisedMillis, (box) =>
          Effect.gen(function*() {
            const running = yield* Effect.fork(box.exec("sleep 100"))
            yield* Effect.sleep("1 second")
            const triggeredAt = Date.now()
            expect(crashWorkersForTesting(how)).toBe(1)
            return { triggeredAt, failure: Fiber.join(running) }
          }))
        expect(error.reason).toMatch(how === "throw" ? /worker crashed[\s\S]*simulated emulator crash/ : /worker exited \(code 70\)/)
      }), 180_000)
  }
})
